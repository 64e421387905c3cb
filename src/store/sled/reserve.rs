//! The space reserve: a file of [`RESERVE_BYTES`] kept in the database
//! directory, given back to the filesystem when the disk is found full.
//!
//! Why: sled 0.34 writes while it opens (recovery, a snapshot). On a disk
//! filled to the last byte, by another process or by a log that grew past
//! the free-space guard, the open failed and a restarted store could not
//! even serve the states it holds. With the reserve, a store that finds
//! its disk full when it opens releases the reserve, opens, and serves
//! loads, while saves are refused (507) and `/health` says the disk is
//! full, until enough space is freed for the reserve to be taken back.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use fs2::FileExt;

/// Bytes set aside for opening the database on a full disk.
pub const RESERVE_BYTES: u64 = 32 * 1024 * 1024;

/// The reserve's file name in the database directory.
pub const RESERVE_FILE: &str = "flow-store.reserve";

const ENOSPC: i32 = 28;

/// The reserve of one database directory.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    held: AtomicBool,
    // The filesystem cannot allocate a file's blocks ahead: then there is no
    // reserve, and its absence must not be taken for a full disk.
    unsupported: AtomicBool,
    // One restore at a time: two would both see the space and both allocate.
    restoring: Mutex<()>,
}

impl Reserve {
    /// The reserve of `dir`, held if its file is there whole.
    pub fn new(dir: &Path) -> Reserve {
        let path = dir.join(RESERVE_FILE);
        let held = std::fs::metadata(&path).is_ok_and(|m| m.len() >= RESERVE_BYTES);
        Reserve {
            path,
            held: AtomicBool::new(held),
            unsupported: AtomicBool::new(false),
            restoring: Mutex::new(()),
        }
    }

    /// Whether the reserve is set aside.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Gives the reserve back to the filesystem.
    pub fn release(&self) -> std::io::Result<()> {
        self.held.store(false, Ordering::Release);
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Sets the reserve aside again if the filesystem has room for it and
    /// `beyond` bytes more; whether it is held afterwards (or cannot be held
    /// on this filesystem at all, which is no reason to refuse a save).
    pub fn restore(&self, beyond: u64) -> bool {
        if self.is_held() || self.unsupported.load(Ordering::Acquire) {
            return true;
        }
        let _one = self
            .restoring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.is_held() {
            return true;
        }
        let Some(dir) = self.path.parent() else {
            return false;
        };
        let room = fs2::available_space(dir).unwrap_or(0);
        if room < RESERVE_BYTES.saturating_add(beyond) {
            return false;
        }
        match self.allocate() {
            Ok(()) => {
                self.held.store(true, Ordering::Release);
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                let full =
                    e.raw_os_error() == Some(ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull;
                if !full {
                    log::warn!(
                        "cannot set aside the {} MiB space reserve {} ({e}): going on without \
                         it; a restart on a disk full to the last byte may then fail",
                        RESERVE_BYTES >> 20,
                        self.path.display()
                    );
                    self.unsupported.store(true, Ordering::Release);
                }
                !full
            }
        }
    }

    fn allocate(&self) -> std::io::Result<()> {
        let file: File = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        // Real blocks, not a sparse file: the point is to hold the space.
        file.allocate(RESERVE_BYTES)?;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(dir.path());
        assert!(!reserve.is_held());
        assert!(reserve.restore(0));
        let file = dir.path().join(RESERVE_FILE);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), RESERVE_BYTES);
        assert!(Reserve::new(dir.path()).is_held());
        reserve.release().unwrap();
        assert!(!reserve.is_held());
        assert!(!file.exists());
        // No filesystem has this much room beyond the reserve.
        assert!(!reserve.restore(u64::MAX / 2));
        assert!(!file.exists());
    }
}
