//! Online backups and restores: the file [`format`], taking a backup from a
//! running store's [`Snapshot`](crate::store::Snapshot), checking a file
//! and restoring one into an empty store.

pub mod command;
pub mod format;
pub mod keys;
pub mod progress;
pub mod stream;
