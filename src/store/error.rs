//! Typed failures of the storage layer.

use std::path::PathBuf;

use super::codec::DecodeError;

/// Why the database could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database.
    #[error("the database at {0} is locked by another process (is another flow-store running?)")]
    Locked(PathBuf),
    /// The database was written by a newer release.
    #[error("the database has format version {found}; this release reads version {supported} (upgrade flow-store)")]
    UnsupportedFormat {
        /// Version found on disk.
        found: u32,
        /// Version this release reads.
        supported: u32,
    },
    /// The disk is full.
    #[error("the disk holding the database is full")]
    DiskFull,
    /// A stored value cannot be read.
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
    /// A database call did not return in time: sled is wedged (a flush
    /// stuck after an I/O error). Only a restart clears it.
    #[error("the database did not answer within {0:?} (a flush stuck after an I/O error?); flow-store must be restarted")]
    Stuck(std::time::Duration),
    /// Any other database or I/O failure.
    #[error("database error: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Classifies a sled error.
    pub fn from_sled(error: sled::Error, path: &std::path::Path) -> StoreError {
        match error {
            sled::Error::Io(io) => Self::from_io(io, path),
            other => Self::Unavailable(other.to_string()),
        }
    }

    fn from_io(io: std::io::Error, path: &std::path::Path) -> StoreError {
        const ENOSPC: i32 = 28;
        if io.raw_os_error() == Some(ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull {
            return Self::DiskFull;
        }
        if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") {
            return Self::Locked(path.to_path_buf());
        }
        Self::Unavailable(io.to_string())
    }
}
