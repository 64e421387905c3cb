//! TLS: the rustls server configuration, built from PEM files, with a
//! certificate that can be swapped at run time (SIGHUP) without dropping
//! connections: new handshakes use the new certificate, open ones continue.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0} contains no PEM certificate")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{0} contains no PEM private key (PKCS#8, SEC1 or PKCS#1)")]
    NoKey(PathBuf),
    /// The key is of a kind rustls cannot sign with.
    #[error("the private key in {0} is not usable: {1}")]
    UnusableKey(PathBuf, String),
    /// The key does not belong to the certificate.
    #[error("the private key {key} does not match the certificate {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// The cryptography of every TLS connection the crate makes or accepts
/// (server and [`crate::client`]): one place to choose it.
pub fn tls_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads a certificate chain and its key, checking that they match.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
    };
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut read(cert_path)?)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: cert_path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut read(key_path)?)
        .map_err(|source| TlsError::Read {
            path: key_path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key_path.to_path_buf()))?;
    let signing_key = tls_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::UnusableKey(key_path.to_path_buf(), e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|_| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
    })?;
    Ok(certified)
}

/// Serves whichever certificate was loaded last.
#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Starts with `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(key)),
        }
    }

    /// Replaces the certificate for new handshakes.
    pub fn replace(&self, key: CertifiedKey) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(key);
    }

    /// When the certificate in service (the leaf) expires, as a Unix
    /// timestamp; `None` if it cannot be parsed (rustls serves it anyway).
    pub fn not_after(&self) -> Option<i64> {
        self.leaf(|cert| cert.validity().not_after.timestamp())
    }

    /// The subject of the certificate in service (the leaf), e.g.
    /// `CN=store.example.com`.
    pub fn subject(&self) -> Option<String> {
        self.leaf(|cert| cert.subject().to_string())
    }

    fn leaf<T>(
        &self,
        read: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
    ) -> Option<T> {
        let current = match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let leaf = current.end_entity_cert().ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        Some(read(&cert))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let guard = match self.current.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(Arc::clone(&guard))
    }
}

/// A rustls server config (TLS 1.2 and 1.3, ALPN h2 then http/1.1) that
/// takes its certificate from `cert`.
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Generates a self-signed certificate for `localhost`/127.0.0.1/::1,
/// returned as (certificate PEM, key PEM). For dev mode and tests.
pub fn self_signed_localhost() -> Result<(String, String), rcgen::Error> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok((certified.cert.pem(), certified.key_pair.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_and_mismatched_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_localhost().unwrap();
        let (_, other_key) = self_signed_localhost().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("cert.pem"), cert).unwrap();
        std::fs::write(p("key.pem"), key).unwrap();
        std::fs::write(p("other.pem"), other_key).unwrap();
        assert!(load_certified_key(&p("cert.pem"), &p("key.pem")).is_ok());
        assert!(matches!(
            load_certified_key(&p("cert.pem"), &p("other.pem")),
            Err(TlsError::Mismatch { .. })
        ));
        assert!(matches!(
            load_certified_key(&p("key.pem"), &p("key.pem")),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(
            load_certified_key(&p("cert.pem"), &p("cert.pem")),
            Err(TlsError::NoKey(_))
        ));
        assert!(matches!(
            load_certified_key(&p("missing"), &p("key.pem")),
            Err(TlsError::Read { .. })
        ));
    }

    #[test]
    fn the_expiry_of_the_certificate_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_localhost().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let reloadable = ReloadableCert::new(load_certified_key(&cert_path, &key_path).unwrap());
        // rcgen's default notAfter.
        let expected = time::macros::datetime!(4096-01-01 0:00 UTC).unix_timestamp();
        assert_eq!(reloadable.not_after(), Some(expected));
    }
}
