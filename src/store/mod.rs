//! Storage: what the service needs from a database, as one interface
//! ([`Store`]), and the engines behind it: [`sled`] (one node, the
//! default) and [`postgres`] (any number of nodes on one database). Nothing above
//! this module knows which engine runs; nothing in it knows about HTTP or
//! JOSE.
//!
//! Every engine guarantees what the HTTP layer's 204 relies on:
//! - a save or delete of several states is all or nothing;
//! - a save replaces a stored state only when its `updatedAt` instant is
//!   equal or newer (last writer by `updatedAt` wins, retries are harmless);
//! - a write returns only once it is durable (survives a crash or power
//!   loss);
//! - expired states read as absent and are removed by
//!   [`Store::purge_expired`].

pub mod error;
pub mod postgres;
pub mod sled;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::model::State;
pub use error::StoreError;

/// What a save did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveOutcome {
    /// States written (new, or replacing an older or equal `updatedAt`).
    pub applied: usize,
    /// States ignored because the stored one is newer.
    pub ignored: usize,
}

/// What an operator wants to know about the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// States stored (expired ones not yet purged included).
    pub states: u64,
    /// Bytes the database takes on disk.
    pub bytes_on_disk: u64,
}

/// A consistent, point-in-time view of every stored state, streamed in
/// key order (tenant, then id), for backups: every write acknowledged
/// before [`Store::snapshot`] returned is in it exactly as written, nothing
/// written after is, and a batch is whole or absent. Expired states not yet
/// purged are included.
#[derive(Debug)]
pub struct Snapshot {
    states: mpsc::Receiver<Result<State, StoreError>>,
    pause: Duration,
}

impl Snapshot {
    /// A snapshot fed through the returned sender by the engine; `pause` is
    /// how long writers waited for the cut.
    pub fn channel(pause: Duration) -> (mpsc::Sender<Result<State, StoreError>>, Snapshot) {
        // Enough to keep the reader busy, bounded so a slow reader holds
        // little memory.
        let (sender, states) = mpsc::channel(256);
        (sender, Snapshot { states, pause })
    }

    /// The next state, an error (after which nothing follows), or `None`
    /// at the end.
    pub async fn next(&mut self) -> Option<Result<State, StoreError>> {
        self.states.recv().await
    }

    /// [`Snapshot::next`] for a blocking thread (never an async task).
    pub fn blocking_next(&mut self) -> Option<Result<State, StoreError>> {
        self.states.blocking_recv()
    }

    /// How long saves and deletes waited while the cut was made.
    pub fn pause(&self) -> Duration {
        self.pause
    }
}

/// A database of flow states keyed by (tenant, id).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The engine's name, for operators ("sled", "postgres").
    fn engine(&self) -> &'static str;

    /// Saves `states` atomically; each replaces the stored one only if its
    /// `updatedAt` is equal or newer. Durable when it returns.
    async fn save_all(&self, states: Vec<State>) -> Result<SaveOutcome, StoreError>;

    /// The state (tenant, id), or `None` if absent or expired at `now`.
    async fn get(
        &self,
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<State>, StoreError>;

    /// Deletes (tenant, id) for each id atomically; unknown ids are ignored.
    /// Returns how many existed. Durable when it returns.
    async fn delete_all(&self, tenant: Uuid, ids: Vec<Uuid>) -> Result<usize, StoreError>;

    /// Removes every state whose `expiresAt` is at or before `now`;
    /// returns how many.
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<usize, StoreError>;

    /// Proves the database can be written, read back and made durable.
    async fn health_check(&self, now: OffsetDateTime) -> Result<(), StoreError>;

    /// Up to `limit` states, expired ones included, in (tenant, id) order
    /// (both engines order UUIDs by their bytes), starting after `after`,
    /// from the first when `None`: the pages of a full copy
    /// (`flow-store migrate`) in bounded memory, while the store serves.
    async fn scan(
        &self,
        after: Option<(Uuid, Uuid)>,
        limit: usize,
    ) -> Result<Vec<State>, StoreError>;

    /// Counts and size, for operators.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Takes a consistent point-in-time view of every state (see
    /// [`Snapshot`]) without stopping writers for longer than the cut.
    /// One at a time: [`StoreError::BackupRunning`] while another is read.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Makes everything written durable before the process exits.
    async fn close(&self) -> Result<(), StoreError>;
}
