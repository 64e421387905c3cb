//! Typed failures of the storage layer, whatever the engine.

use std::path::PathBuf;

/// Why the database could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("stored state is corrupt or of an unknown format: {0}")]
    Corrupt(String),
    /// A database call did not return in time and the engine cannot recover
    /// by itself (sled wedged by a flush stuck after an I/O error). Only a
    /// restart clears it.
    #[error("the database did not answer within {0:?} (a flush stuck after an I/O error?); flow-store must be restarted")]
    Stuck(std::time::Duration),
    /// A consistent scan was asked for while another one runs.
    #[error("a backup is already running; wait for it to finish and try again")]
    BackupRunning,
    /// Any other database or I/O failure.
    #[error("database error: {0}")]
    Unavailable(String),
}
