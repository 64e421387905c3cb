//! `serve --dev`: a complete, throwaway store in `./flow-store-dev/`, so a
//! newcomer sees the store work with one command. It writes a real config
//! file, a self-signed certificate, a platform key pair and a receiver key
//! pair (private files 0600), and `simulate.json` for `simulate --dev`.
//! Existing files are reused, so restarts keep the data and the keys.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::keys::generate_p384_jwk;
use crate::server::tls::self_signed_localhost;
use crate::simulate::DevTarget;

/// The directory dev mode works in, relative to the current directory.
pub const DEV_DIR: &str = "flow-store-dev";

const DEV_CONFIG_HEADER: &str = "\
# flow-store DEVELOPMENT configuration, written by `flow-store serve --dev`.
# Throwaway keys and a self-signed certificate: never use these in production.
# Every key is spelled out with its value; see config.example.toml for what each does.

";

/// The dev store's configuration file: [`Config::local`] on the default
/// port, sweeping every minute so that expiry is visible while trying it.
fn dev_config() -> anyhow::Result<String> {
    let mut config = Config::local("127.0.0.1:8443", "Development store");
    config.storage.sweep_interval_seconds = 60;
    Ok(format!("{DEV_CONFIG_HEADER}{}", config.to_toml()?))
}

/// Creates whatever is missing under `dir`, prints what it did, and returns
/// the config file's path.
pub fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    for sub in ["", "tls", "keys"] {
        fs::create_dir_all(abs.join(sub))
            .with_context(|| format!("creating {}", abs.join(sub).display()))?;
    }
    eprintln!("==================================================================");
    eprintln!(" flow-store DEVELOPMENT MODE: throwaway keys and certificate in");
    eprintln!(" {}", abs.display());
    eprintln!(" Never point the Boomi platform at this instance.");
    eprintln!("==================================================================");
    let config = abs.join("config.toml");
    create_if_missing(&config, 0o644, dev_config)?;
    let cert_path = abs.join("tls/cert.pem");
    if !cert_path.exists() {
        let (cert, key) = self_signed_localhost().context("generating the dev certificate")?;
        create_if_missing(&abs.join("tls/key.pem"), 0o600, || Ok(key))?;
        create_if_missing(&cert_path, 0o644, || Ok(cert))?;
    }
    for name in ["platform", "receiver"] {
        create_if_missing(&abs.join(format!("keys/{name}.jwk")), 0o600, || {
            Ok(generate_p384_jwk()
                .context("generating a P-384 key")?
                .to_string())
        })?;
    }
    eprintln!(" try it: cargo run --release -- simulate --dev   (in another terminal)");
    eprintln!("==================================================================");
    Ok(config)
}

/// Writes `dir/simulate.json` for a store listening on `addr`, so that
/// `simulate --dev` finds it whatever port it got.
pub fn write_simulate_target(
    dir: &Path,
    addr: std::net::SocketAddr,
    base_path: &str,
) -> anyhow::Result<()> {
    let abs = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let target = DevTarget {
        url: format!("https://{addr}{base_path}"),
        platform_key: abs.join("keys/platform.jwk"),
        receiver_key: abs.join("keys/receiver.jwk"),
        ca: abs.join("tls/cert.pem"),
    };
    let path = abs.join("simulate.json");
    fs::write(&path, serde_json::to_string_pretty(&target)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn create_if_missing(
    path: &Path,
    mode: u32,
    contents: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if path.exists() {
        eprintln!(" reusing  {}", path.display());
        return Ok(());
    }
    let text = contents()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(" created  {}", path.display());
    Ok(())
}
