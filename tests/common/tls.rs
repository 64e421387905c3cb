//! TLS: one self-signed certificate per test process (rcgen, not the
//! crate's own generator), which the servers under test present and the
//! test clients pin.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokio_rustls::rustls::pki_types::CertificateDer;

/// A self-signed certificate for `localhost` / 127.0.0.1.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl TestCert {
    pub fn generate() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("self-signed certificate");
        Self {
            cert_pem: ck.cert.pem(),
            key_pem: ck.key_pair.serialize_pem(),
            cert_der: ck.cert.der().clone(),
        }
    }

    /// Write `cert.pem` and `key.pem` into `dir`.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).expect("tls dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// One certificate per test process: generating is cheap, but there is no
/// reason to do it per test.
pub fn test_cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(TestCert::generate)
}
