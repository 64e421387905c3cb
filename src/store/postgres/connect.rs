//! From the operator's settings to a pool of connections: the URL parsed
//! (and refused when it holds a password), the password read from its file,
//! TLS by rustls with the `sslmode` semantics, and the session settings
//! every connection starts with.
//!
//! `sslmode`, which tokio-postgres parses only partly, is read here:
//! - `disable`: plain TCP;
//! - `prefer` (the default without `ca`): TLS when the server offers it;
//! - `require`, `verify-full`: TLS or no connection.
//!
//! Whenever TLS is used the server's certificate is verified in full (chain
//! and host name), against `ca` when set, else the system's trust store:
//! flow-store never sends a password over TLS to a server it has not
//! authenticated (libpq's `require` would). Setting `ca` means
//! `verify-full`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// What the engine needs to reach its database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// libpq-style URL (or key=value string), without a password.
    pub url: String,
    /// File holding the password; `None` for password-less authentication.
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) of the server; `Some` means verify-full.
    pub ca: Option<PathBuf>,
    /// Connections at most.
    pub pool_size: usize,
    /// Bound of every statement, connection attempt and request.
    pub statement_timeout: Duration,
}

/// `sslmode` as flow-store reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
}

/// The pool the engine draws connections from. No connection is made
/// here: the first `get` makes one.
pub fn pool(options: &PostgresOptions) -> Result<Pool, StoreError> {
    let config = client_config(options)?;
    let tls = tls_connector(options.ca.as_deref())?;
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            // A connection that died while idle in the pool (database
            // restarted, primary switched) is found out by a round trip
            // before it is handed out, and replaced: the store serves again
            // without a restart.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let timeout = Some(options.statement_timeout);
    Pool::builder(manager)
        .max_size(options.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot build the PostgreSQL pool: {e}")))
}

/// The tokio-postgres configuration of `options`: URL, password, TLS mode
/// and session settings.
fn client_config(options: &PostgresOptions) -> Result<tokio_postgres::Config, StoreError> {
    let invalid = |m: String| StoreError::Unavailable(format!("storage.postgres.url: {m}"));
    let (url, mode) = split_sslmode(&options.url).map_err(invalid)?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| invalid(format!("not a PostgreSQL connection URL: {e}")))?;
    if config.get_password().is_some() {
        return Err(invalid(
            "holds a password; put it in storage.postgres.password_file instead".into(),
        ));
    }
    if let Some(file) = &options.password_file {
        config.password(read_password(file)?);
    }
    let mode = match (mode, &options.ca) {
        (Some(TlsMode::Disable), Some(_)) => {
            return Err(invalid(
                "sslmode=disable contradicts storage.postgres.ca (which means verify-full)".into(),
            ))
        }
        (Some(mode), _) => mode,
        (None, Some(_)) => TlsMode::Require,
        (None, None) => TlsMode::Prefer,
    };
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require => SslMode::Require,
    });
    apply_session_settings(&mut config, options.statement_timeout);
    Ok(config)
}

/// Bounds every statement, every connection attempt and every open
/// transaction by `timeout`, and detects a vanished server.
fn apply_session_settings(config: &mut tokio_postgres::Config, timeout: Duration) {
    let millis = timeout.as_millis();
    // A transaction left open by a node that died mid-request would hold
    // its row locks until TCP noticed; the server ends it instead.
    let ours = format!(
        "-c statement_timeout={millis} -c idle_in_transaction_session_timeout={millis} \
         -c synchronous_commit=on"
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(options);
    config.connect_timeout(timeout);
    config.tcp_user_timeout(timeout);
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("flow-store");
    }
}

/// Removes `sslmode` from `url` (URL or key=value form) and reads it.
fn split_sslmode(url: &str) -> Result<(String, Option<TlsMode>), String> {
    let parse = |value: &str| match value {
        "disable" => Ok(TlsMode::Disable),
        "prefer" => Ok(TlsMode::Prefer),
        "require" | "verify-full" => Ok(TlsMode::Require),
        other => Err(format!(
            "sslmode={other} is not one of disable, prefer, require, verify-full"
        )),
    };
    let mut mode = None;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.strip_prefix("sslmode=") {
                Some(value) => mode = Some(parse(value)?),
                None => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((url, mode));
    }
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        match word.strip_prefix("sslmode=") {
            Some(value) => mode = Some(parse(value.trim_matches('\''))?),
            None => kept.push(word),
        }
    }
    Ok((kept.join(" "), mode))
}

/// The password in `file`, without its trailing newline.
fn read_password(file: &Path) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot read storage.postgres.password_file {}: {e}",
            file.display()
        ))
    })?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "storage.postgres.password_file {} is empty",
            file.display()
        )));
    }
    Ok(password.to_string())
}

/// rustls for the database connection: full verification against `ca`, or
/// against the system's trust store without it.
fn tls_connector(ca: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_ca(path)? {
                roots.add(cert).map_err(|e| {
                    StoreError::Unavailable(format!(
                        "storage.postgres.ca {}: unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            // Certificates the system store holds but rustls cannot parse
            // are skipped, as every rustls client does.
            let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::server::tls::tls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("TLS set-up for PostgreSQL failed: {e}")))?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates of the PEM file `path`; at least one.
fn read_ca(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, StoreError> {
    let fail =
        |m: String| StoreError::Unavailable(format!("storage.postgres.ca {}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail("holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            password_file: None,
            ca: None,
            pool_size: 4,
            statement_timeout: Duration::from_secs(3),
        }
    }

    #[test]
    fn sslmode_is_read_and_removed_from_a_url() {
        let (url, mode) = split_sslmode(
            "postgresql://u@h1:5432,h2:5432/db?sslmode=verify-full&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write"
        );
        assert_eq!(mode, Some(TlsMode::Require));
        let (url, mode) = split_sslmode("postgresql://u@h/db?sslmode=disable").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("postgresql://u@h/db", Some(TlsMode::Disable))
        );
        let (url, mode) = split_sslmode("host=h user=u sslmode=require").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("host=h user=u", Some(TlsMode::Require))
        );
        assert!(split_sslmode("postgresql://h/db?sslmode=allow")
            .unwrap_err()
            .contains("sslmode=allow"));
    }

    #[test]
    fn an_inline_password_is_refused() {
        for url in [
            "postgresql://flow:secret@localhost/flow",
            "host=localhost user=flow password=secret",
        ] {
            let e = client_config(&options(url)).unwrap_err().to_string();
            assert!(e.contains("password_file"), "{e}");
            assert!(!e.contains("secret"), "the message leaks the password: {e}");
        }
    }

    #[test]
    fn ca_means_tls_required_and_contradicts_disable() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let mut with_ca = options("postgresql://u@localhost/db");
        with_ca.ca = Some(ca.clone());
        assert_eq!(
            client_config(&with_ca).unwrap().get_ssl_mode(),
            SslMode::Require
        );
        with_ca.url = "postgresql://u@localhost/db?sslmode=disable".into();
        assert!(client_config(&with_ca).is_err());
        assert_eq!(
            client_config(&options("postgresql://u@localhost/db"))
                .unwrap()
                .get_ssl_mode(),
            SslMode::Prefer
        );
        // An unreadable or empty CA file is named.
        let error = |ca: &Path| match tls_connector(Some(ca)) {
            Ok(_) => panic!("{} was accepted as a CA file", ca.display()),
            Err(e) => e.to_string(),
        };
        let e = error(&ca);
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(&ca, "not pem").unwrap();
        let e = error(&ca);
        assert!(e.contains("no CERTIFICATE"), "{e}");
    }

    #[test]
    fn the_password_comes_from_its_file_and_session_settings_are_added() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut o = options("postgresql://u@localhost/db?options=-c%20search_path%3Dflow");
        o.password_file = Some(file.clone());
        let config = client_config(&o).unwrap();
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
        let session = config.get_options().unwrap();
        assert!(session.starts_with("-c search_path=flow "), "{session}");
        assert!(session.contains("statement_timeout=3000"), "{session}");
        assert!(!format!("{config:?}").contains("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        assert!(client_config(&o)
            .unwrap_err()
            .to_string()
            .contains("is empty"));
    }
}
