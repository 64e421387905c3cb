//! `--include-keys` and `--with-keys`: the configuration, TLS and key
//! files that rebuild a lost server, collected by the daemon into a backup
//! and put back by a restore with the owners and modes `keys import` gives
//! (root:flow-store 0640; a receiver key flow-store:flow-store 0600),
//! never over an existing file.

use std::path::{Path, PathBuf};

use super::format::{BackupFile, FileRole};
use crate::admin::keys::{Ownership, PLATFORM_KEY_MODE, RECEIVER_KEY_MODE};
use crate::config::{Config, KeySource};

/// Why the files could not be collected or put back.
#[derive(Debug, thiserror::Error)]
pub enum KeyFilesError {
    /// A file could not be read or written.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// Restoring would overwrite these.
    #[error("these files exist already and are never overwritten: {}; move them aside and run restore again", list(.0))]
    Exist(Vec<PathBuf>),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The files `config` names: itself, the TLS certificate and key (TLS on),
/// the Basic password file, every store's key files.
pub fn wanted(config: &Config) -> Vec<(FileRole, PathBuf)> {
    let mut files = Vec::new();
    if let Some(path) = &config.source_path {
        files.push((FileRole::Config, absolute(path)));
    }
    if config.tls.enabled {
        files.push((FileRole::TlsCert, config.tls.cert.clone()));
        files.push((FileRole::TlsKey, config.tls.key.clone()));
    }
    if let Some(path) = &config.auth.basic_password_file {
        files.push((FileRole::BasicPassword, path.clone()));
    }
    for store in &config.stores {
        for (role, source) in [
            (FileRole::PlatformKey, &store.platform_key),
            (FileRole::ReceiverKey, &store.receiver_key),
        ] {
            if let KeySource::File(path) = source {
                files.push((role, path.clone()));
            }
        }
    }
    files
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reads every file `config` names.
pub fn collect(config: &Config) -> Result<Vec<BackupFile>, KeyFilesError> {
    wanted(config)
        .into_iter()
        .map(|(role, path)| {
            let bytes = std::fs::read(&path).map_err(|error| KeyFilesError::Io {
                what: "cannot read",
                path: path.clone(),
                error,
            })?;
            Ok(BackupFile {
                role,
                path: absolute(&path),
                bytes,
            })
        })
        .collect()
}

/// Those of `files` that exist already.
pub fn existing(files: &[BackupFile]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| f.path.symlink_metadata().is_ok())
        .map(|f| f.path.clone())
        .collect()
}

/// The mode and owner a file of `role` gets.
fn placement(role: FileRole, ownership: &Ownership) -> (u32, Option<(u32, u32)>) {
    match role {
        FileRole::ReceiverKey => (RECEIVER_KEY_MODE, ownership.receiver),
        _ => (PLATFORM_KEY_MODE, ownership.shared),
    }
}

/// Writes `files` back where they were, creating missing directories;
/// refuses (writing nothing) if any of them exists.
pub fn install(files: &[BackupFile], ownership: &Ownership) -> Result<(), KeyFilesError> {
    let exist = existing(files);
    if !exist.is_empty() {
        return Err(KeyFilesError::Exist(exist));
    }
    for file in files {
        let io = |what| {
            let path = file.path.clone();
            move |error| KeyFilesError::Io { what, path, error }
        };
        if let Some(dir) = file.path.parent() {
            std::fs::create_dir_all(dir).map_err(io("cannot create the directory of"))?;
        }
        let (mode, owner) = placement(file.role, ownership);
        crate::admin::keys::write_new_file(&file.path, &file.bytes, mode)
            .map_err(io("cannot write"))?;
        // Exactly this mode, whatever the umask took away.
        std::fs::set_permissions(
            &file.path,
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .map_err(io("cannot set the mode of"))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&file.path, Some(uid), Some(gid))
                .map_err(io("cannot change the owner of"))?;
        }
    }
    Ok(())
}
