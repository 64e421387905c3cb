//! The sled engine: one embedded database on local disk, the single-node
//! default. [`Database`] is the synchronous core (sled is synchronous):
//! a save or delete of several states is one sled transaction, and every
//! write returns only after a `flush` that started after it, which
//! `fdatasync`s sled's log (the vendored sled's patch: upstream leaves it in
//! the drive's cache); concurrent writers share that flush
//! ([`group_commit`]). [`SledStore`]
//! is the [`Store`] the service holds: it queues saves and deletes to one
//! writer thread that flushes them in batches ([`writer`]), answers a load
//! on the async worker itself when memory alone can, without waiting
//! ([`Database::get_in_memory`]), runs every other call on a blocking
//! thread, and bounds each by [`STORAGE_TIMEOUT`].
//!
//! Everything sled-specific lives here: the on-disk layout ([`codec`]), the
//! free-space guard, the storage timeout and [`StoreError::Stuck`].

pub mod changes;
pub mod codec;
pub mod group_commit;
pub mod reserve;
pub mod snapshot;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SaveOutcome, Snapshot, Store, StoreError, StoreStats};
use crate::model::State;
use group_commit::GroupCommit;
use reserve::{Reserve, RESERVE_BYTES};
use snapshot::{WriteGate, WriterPass};
use writer::Writer;

const STATES_TREE: &str = "states";
const EXPIRY_TREE: &str = "expiry";
const META_TREE: &str = "meta";
const FORMAT_KEY: &[u8] = b"format_version";
const HEALTH_KEY: &[u8] = b"health_probe";

/// Free space every save must leave on the database's filesystem, beyond
/// twice its own size; below it saves are refused with
/// [`StoreError::DiskFull`] and `/health` reports the disk full.
///
/// Why a guard instead of letting sled meet ENOSPC: sled 0.34 does not
/// survive it. When writing a large value (a "blob", over ~128 KiB) fails,
/// it leaks its claim on the I/O buffer and every later flush waits forever;
/// when a log write fails, it latches the error for the life of the handle.
/// Either way the store stays broken after space is freed, until a restart.
/// Refusing early keeps sled from ever seeing a full disk, so the store
/// answers 507 and recovers by itself once space is freed (proven by the
/// disk-full suite of `fault-tests`). Another process filling the disk
/// between the check and the write can still wedge sled.
pub const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

/// How long a storage call may take before the request gets 503.
///
/// Why: a sled 0.34 handle wedged by an I/O error (see [`MIN_FREE_BYTES`])
/// blocks every later flush forever; without a bound each request would
/// hang with it, and `/health` too. With it the failure is reported (503,
/// logged). The blocked thread stays blocked; only a restart clears a
/// wedged handle (acknowledged writes are flushed, so restarting loses
/// nothing). Found by the storage-failure suite of `fault-tests`.
pub const STORAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// The sled engine as the service holds it.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: Database,
    writer: Arc<Writer>,
}

impl SledStore {
    /// Opens (creating if missing) the database at `path` with a page cache
    /// of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let db = Database::open(path, cache_bytes)?;
        let writer = Arc::new(Writer::start(db.clone())?);
        Ok(SledStore { db, writer })
    }

    /// Runs `call` on the database off the async workers, within
    /// [`STORAGE_TIMEOUT`].
    async fn call<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.db.clone();
        bounded(STORAGE_TIMEOUT, move || call(&db)).await
    }
}

#[async_trait]
impl Store for SledStore {
    fn engine(&self) -> &'static str {
        "sled"
    }

    async fn save_all(&self, states: Vec<State>) -> Result<SaveOutcome, StoreError> {
        within(STORAGE_TIMEOUT, self.writer.save_all(states)).await
    }

    async fn get(
        &self,
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<State>, StoreError> {
        // Handing a read to a blocking thread and back cost a load up to 8%
        // of its CPU on one core ("Where a load's read runs" in
        // docs/performance.md), so a read that memory alone can answer runs
        // here; one that might wait goes to the pool, under the timeout.
        if let Some(found) = self.db.get_in_memory(tenant, id, now) {
            return found;
        }
        self.call(move |db| db.get(tenant, id, now)).await
    }

    async fn delete_all(&self, tenant: Uuid, ids: Vec<Uuid>) -> Result<usize, StoreError> {
        within(STORAGE_TIMEOUT, self.writer.delete_all(tenant, ids)).await
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        self.call(move |db| db.purge_expired(now)).await
    }

    async fn health_check(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        self.call(move |db| db.health_check(now)).await
    }

    async fn scan(
        &self,
        after: Option<(Uuid, Uuid)>,
        limit: usize,
    ) -> Result<Vec<State>, StoreError> {
        self.call(move |db| db.scan(after, limit)).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.call(|db| db.stats()).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.call(|db| db.flush()).await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let cut = self.call(|db| db.cut()).await?;
        let pause = cut.pause();
        let (sender, snapshot) = Snapshot::channel(pause);
        let db = self.db.clone();
        // No storage timeout: the scan lasts as long as the reader reads.
        tokio::task::spawn_blocking(move || {
            let result = db.scan_cut(&cut, |state| sender.blocking_send(state).is_ok());
            if let Err(e) = result {
                let _ = sender.blocking_send(Err(e));
            }
        });
        Ok(snapshot)
    }
}

/// The state stored for (tenant, id), unless absent or expired at `now`.
fn unexpired(
    tenant: Uuid,
    id: Uuid,
    value: Option<sled::IVec>,
    now: OffsetDateTime,
) -> Result<Option<State>, StoreError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let state = codec::decode(tenant, id, &value)?;
    Ok((!state.is_expired(now)).then_some(state))
}

/// Runs `f` on a blocking thread; [`StoreError::Stuck`] if it has not
/// returned within `limit`.
async fn bounded<T, F>(limit: Duration, f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    within(limit, async {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
    })
    .await
}

/// `call`'s answer; [`StoreError::Stuck`] if it has not come within `limit`.
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(StoreError::Stuck(limit)))
}

/// The synchronous database. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct Database {
    db: sled::Db,
    states: sled::Tree,
    expiry: sled::Tree,
    meta: sled::Tree,
    path: PathBuf,
    // Free bytes the last save refused for lack of space needed (0 after a
    // save succeeds). `/health` reports the disk full while they are still
    // missing, so it agrees with what saves get.
    space_wanted: Arc<AtomicU64>,
    // One health probe at a time: overlapping probes (`/health` polled by a
    // load balancer while the watchdog checks) overwrite each other's
    // stamp and would read back the wrong one.
    health_probe: Arc<Mutex<()>>,
    // Space set aside for opening on a full disk (see `reserve`).
    reserve: Arc<Reserve>,
    // Concurrent writes share one flush (see `group_commit`).
    commits: Arc<GroupCommit>,
    // Writes pass it; backups cut through it (see `snapshot`).
    gate: Arc<WriteGate>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish()
    }
}

impl Database {
    /// Opens (creating if missing) the database at `path` with a page cache
    /// of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Database, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        let reserve = Reserve::new(path);
        // Before sled writes anything: an open that meets a full disk can
        // leave a broken snapshot file behind (found by the disk-full suite).
        let free = fs2::available_space(path).unwrap_or(u64::MAX);
        if free < MIN_FREE_BYTES && reserve.is_held() {
            log::warn!(
                "the disk holding the database at {} is full ({} KiB free): releasing the {} MiB \
                 space reserve so that stored states can still be loaded; saves are refused \
                 until space is freed on that filesystem",
                path.display(),
                free >> 10,
                RESERVE_BYTES >> 20
            );
            reserve.release().map_err(|e| {
                StoreError::Unavailable(format!("cannot release the space reserve: {e}"))
            })?;
        }
        let db = open_sled(path, cache_bytes)?;
        sync_directory_entries(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot sync the directory {}: {e}", path.display()))
        })?;
        let err = |e| sled_error(e, path);
        let store = Database {
            states: db.open_tree(STATES_TREE).map_err(err)?,
            expiry: db.open_tree(EXPIRY_TREE).map_err(err)?,
            meta: db.open_tree(META_TREE).map_err(err)?,
            db,
            path: path.to_path_buf(),
            space_wanted: Arc::new(AtomicU64::new(0)),
            health_probe: Arc::new(Mutex::new(())),
            reserve: Arc::new(reserve),
            commits: Arc::new(GroupCommit::default()),
            gate: Arc::new(WriteGate::default()),
        };
        store.check_format()?;
        if !store.reserve.restore(MIN_FREE_BYTES) {
            log::warn!(
                "the disk holding the database at {} has less than {} MiB free: saves are \
                 refused (507) and /health reports the disk full until space is freed; \
                 stored states can still be loaded",
                path.display(),
                (RESERVE_BYTES + MIN_FREE_BYTES) >> 20
            );
        }
        Ok(store)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: sled::Error) -> StoreError {
        sled_error(e, &self.path)
    }

    fn check_format(&self) -> Result<(), StoreError> {
        match self.meta.get(FORMAT_KEY).map_err(|e| self.err(e))? {
            None => {
                self.meta
                    .insert(FORMAT_KEY, &codec::DB_FORMAT_VERSION.to_be_bytes())
                    .map_err(|e| self.err(e))?;
                self.flush()
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX);
                if found == codec::DB_FORMAT_VERSION {
                    Ok(())
                } else {
                    Err(StoreError::UnsupportedFormat {
                        found,
                        supported: codec::DB_FORMAT_VERSION,
                    })
                }
            }
        }
    }

    /// Refuses a write of `bytes` that would leave less than
    /// [`MIN_FREE_BYTES`] free. A filesystem that cannot be asked is not
    /// held against the write.
    fn ensure_space(&self, bytes: u64) -> Result<(), StoreError> {
        let wanted = bytes.saturating_mul(2).saturating_add(MIN_FREE_BYTES);
        // A released reserve comes back before any save is accepted.
        if !self.reserve.restore(wanted) {
            self.space_wanted
                .store(wanted.saturating_add(RESERVE_BYTES), Ordering::Relaxed);
            return Err(StoreError::DiskFull);
        }
        match fs2::available_space(&self.path) {
            Ok(free) if free < wanted => {
                self.space_wanted.store(wanted, Ordering::Relaxed);
                Err(StoreError::DiskFull)
            }
            _ => Ok(()),
        }
    }

    /// Saves `states` atomically; each replaces the stored one only if its
    /// `updatedAt` is equal or newer. Durable when it returns.
    pub fn save_all(&self, states: &[State]) -> Result<SaveOutcome, StoreError> {
        // Held until durable, so a backup's cut never splits this batch.
        let pass = self.writer_pass();
        let written = self.transact_one(&self.prepare_save(states)?, &pass)?;
        self.commit()?;
        Ok(written.saved)
    }

    /// Enters the write gate; every write holds the pass until it is
    /// durable (see [`snapshot`]).
    fn writer_pass(&self) -> WriterPass<'_> {
        self.gate.writer()
    }

    /// The state (tenant, id), or `None` if absent or expired at `now`.
    pub fn get(
        &self,
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<State>, StoreError> {
        let value = self
            .states
            .get(codec::state_key(tenant, id))
            .map_err(|e| self.err(e))?;
        unexpired(tenant, id, value, now)
    }

    /// [`Database::get`] if memory alone can answer it, without waiting on
    /// the disk, a transaction, or a split or merge of sled's tree (which a
    /// plain sled read helps along, writing to sled's log); `None` when it
    /// cannot, and then only [`Database::get`] can.
    pub fn get_in_memory(
        &self,
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Option<Result<Option<State>, StoreError>> {
        // An error here (the tree dropped) is left to `get` to report.
        let value = self
            .states
            .get_in_memory(codec::state_key(tenant, id))
            .ok()??;
        Some(unexpired(tenant, id, value, now))
    }

    /// Deletes (tenant, id) for each id atomically; unknown ids are ignored.
    /// Returns how many existed. Durable when it returns.
    pub fn delete_all(&self, tenant: Uuid, ids: &[Uuid]) -> Result<usize, StoreError> {
        let pass = self.writer_pass();
        let written = self.transact_one(&changes::Prepared::Delete { tenant, ids }, &pass)?;
        self.commit()?;
        Ok(written.deleted)
    }

    /// Removes every state whose `expiresAt` is at or before `now`.
    /// Returns how many were removed.
    pub fn purge_expired(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let bound = codec::expiry_upper_bound(now.unix_timestamp_nanos());
        let mut purged = 0;
        for entry in self.expiry.range(..&bound[..]) {
            let (index_key, _) = entry.map_err(|e| self.err(e))?;
            let Some((tenant, id)) = codec::expiry_key_state(&index_key) else {
                continue;
            };
            purged += self.purge_one(&index_key, tenant, id, now)?;
        }
        if purged > 0 {
            self.commit()?;
        }
        Ok(purged)
    }

    // Removes one expired state, re-checking inside the transaction in case
    // a concurrent save just replaced it with a fresher version.
    fn purge_one(
        &self,
        index_key: &[u8],
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        // Not held across the sweep's single commit: a state purged here
        // had expired, and the backup keeps its pre-image either way.
        let pass = self.gate.writer();
        (&self.states, &self.expiry)
            .transaction(|(tx_states, tx_expiry)| {
                tx_expiry.remove(index_key)?;
                let key = codec::state_key(tenant, id);
                let Some(value) = tx_states.get(key)? else {
                    return Ok(0);
                };
                let meta =
                    codec::decode_meta(&value).map_err(ConflictableTransactionError::Abort)?;
                let expired = meta.expires_at.as_ref().is_some_and(|e| e.instant() <= now);
                if expired {
                    pass.before_change(&key, Some(&value));
                    tx_states.remove(&key[..])?;
                    Ok(1)
                } else {
                    Ok(0)
                }
            })
            .map_err(|e| self.tx_err(e))
    }

    /// Proves the database can be written, read back and flushed.
    pub fn health_check(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        // Unhealthy while even a small save would be refused, or while the
        // space the last refused save needed is still missing.
        if !self.reserve.restore(MIN_FREE_BYTES) {
            return Err(StoreError::DiskFull);
        }
        let wanted = self.space_wanted.load(Ordering::Relaxed);
        if let Ok(free) = fs2::available_space(&self.path) {
            if free < wanted.max(MIN_FREE_BYTES) {
                return Err(StoreError::DiskFull);
            }
        }
        // A poisoned lock only means another probe panicked; the unit value
        // it guards cannot be left inconsistent.
        let _probe = self
            .health_probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = now.unix_timestamp_nanos().to_be_bytes();
        self.meta
            .insert(HEALTH_KEY, &stamp)
            .map_err(|e| self.err(e))?;
        let back = self.meta.get(HEALTH_KEY).map_err(|e| self.err(e))?;
        if back.as_deref() != Some(&stamp[..]) {
            return Err(StoreError::Unavailable(
                "health probe read back a different value".into(),
            ));
        }
        self.commit()
    }

    /// Up to `limit` states in key order after `after` (see [`Store::scan`]).
    pub fn scan(
        &self,
        after: Option<(Uuid, Uuid)>,
        limit: usize,
    ) -> Result<Vec<State>, StoreError> {
        let entries = match after {
            Some((tenant, id)) => {
                let start = codec::state_key(tenant, id);
                self.states
                    .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            }
            None => self.states.iter(),
        };
        entries
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(|e| self.err(e))?;
                let (tenant, id) = codec::state_key_parts(&key)
                    .ok_or_else(|| StoreError::Corrupt("a state key of the wrong length".into()))?;
                Ok(codec::decode(tenant, id, &value)?)
            })
            .collect()
    }

    /// Makes a backup's cut now (see [`snapshot`]) and returns it; scan it
    /// with [`Database::scan_cut`]. Writers pause only while it is made.
    pub fn cut(&self) -> Result<snapshot::Cut, StoreError> {
        self.gate
            .open_epoch()
            .map_err(|_| StoreError::BackupRunning)
    }

    /// Every state as it was at `cut`, in key order, until `emit` returns
    /// `false`.
    pub fn scan_cut(
        &self,
        cut: &snapshot::Cut,
        mut emit: impl FnMut(Result<State, StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        cut.scan(&self.states, |key, value| {
            let state = codec::state_key_parts(key)
                .ok_or(codec::DecodeError("a key is not (tenant, id)"))
                .and_then(|(tenant, id)| codec::decode(tenant, id, value))
                .map_err(StoreError::from);
            emit(state)
        })
        .map_err(|e| self.err(e))
    }

    /// Counts and size. sled counts by walking the tree: O(states).
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            states: self.states.len() as u64,
            bytes_on_disk: self.db.size_on_disk().map_err(|e| self.err(e))?,
        })
    }

    /// Returns once everything this thread wrote is on disk, sharing the
    /// flush with concurrent writers.
    fn commit(&self) -> Result<(), StoreError> {
        self.commits.commit(|| self.flush())
    }

    /// Flushes started so far.
    #[cfg(test)]
    fn flushes(&self) -> u64 {
        self.commits.started()
    }

    /// Live handles on this database (clones of it).
    #[cfg(test)]
    fn handles(&self) -> usize {
        Arc::strong_count(&self.commits)
    }

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    fn tx_err(&self, e: TransactionError<codec::DecodeError>) -> StoreError {
        match e {
            TransactionError::Abort(decode) => StoreError::from(decode),
            TransactionError::Storage(e) => self.err(e),
        }
    }
}

/// Opens sled at `path`.
fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .open()
        .map_err(|e| sled_error(e, path))
}

/// Makes the names in `path` durable (sled's `db`, `conf` and `blobs/`),
/// and `path`'s own name in its parent, which the open may have created:
/// sled syncs what it writes into files, never a directory, and a file
/// whose name is lost to a power cut is lost with it.
fn sync_directory_entries(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    match path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// Classifies a sled error.
fn sled_error(error: sled::Error, path: &Path) -> StoreError {
    const ENOSPC: i32 = 28;
    let sled::Error::Io(io) = error else {
        return StoreError::Unavailable(error.to_string());
    };
    if io.raw_os_error() == Some(ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull {
        return StoreError::DiskFull;
    }
    if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") {
        return StoreError::Locked(path.to_path_buf());
    }
    StoreError::Unavailable(io.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StateMeta, Timestamp};

    pub(super) fn state(
        tenant: Uuid,
        id: Uuid,
        updated: &str,
        expires: Option<&str>,
        content: &str,
    ) -> State {
        State {
            tenant,
            id,
            meta: StateMeta {
                parent: None,
                flow: None,
                flow_version: None,
                current_map_element: None,
                current_user: None,
                is_done: false,
                created_at: None,
                updated_at: Timestamp::parse(updated).unwrap(),
                expires_at: expires.map(|e| Timestamp::parse(e).unwrap()),
            },
            content: content.into(),
        }
    }

    pub(super) fn at(text: &str) -> OffsetDateTime {
        Timestamp::parse(text).unwrap().instant()
    }

    pub(super) const NOW: &str = "2026-01-01T00:00:00Z";
    pub(super) const TEST_CACHE_BYTES: u64 = 8 * 1024 * 1024;

    /// Opens a database this process just closed: sled's background
    /// flusher keeps it (and its lock) for up to one flush interval after
    /// the last handle is dropped.
    fn reopen(path: &Path) -> Database {
        try_reopen(path).unwrap()
    }

    /// [`reopen`], whatever the outcome. Without a background flusher too:
    /// the I/O thread that wrote the last flush still holds the database
    /// for a moment after the flush returned (a test that reopened at once
    /// met `Locked` in CI on 2026-12-04).
    fn try_reopen(path: &Path) -> Result<Database, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Database::open(path, TEST_CACHE_BYTES) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// `/health` from a load balancer and the watchdog's check overlap; each
    /// must read back its own probe, not fail on the other's.
    #[test]
    fn concurrent_health_checks_all_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let threads: Vec<_> = (0..8i64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..50i64)
                        .map(|i| {
                            let now = at(NOW) + time::Duration::nanoseconds(t * 1000 + i);
                            store.health_check(now).map_err(|e| e.to_string())
                        })
                        .filter(Result::is_err)
                        .count()
                })
            })
            .collect();
        let failed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(
            failed, 0,
            "{failed} of 400 overlapping health checks failed"
        );
    }

    #[tokio::test]
    async fn a_stuck_storage_call_becomes_stuck_not_a_hang() {
        let limit = Duration::from_millis(50);
        let stuck = bounded(limit, || {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        });
        let err = stuck.await.unwrap_err();
        assert!(matches!(err, StoreError::Stuck(_)), "{err}");
        assert_eq!(bounded(limit, || Ok(7)).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn the_engine_answers_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap());
        assert_eq!(store.engine(), "sled");
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        let saved = store
            .save_all(vec![state(t, i, NOW, None, "via the trait")])
            .await
            .unwrap();
        assert_eq!(saved.applied, 1);
        let got = store.get(t, i, at(NOW)).await.unwrap().unwrap();
        assert_eq!(got.content, "via the trait");
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.states, 1);
        assert!(stats.bytes_on_disk > 0);
        store.health_check(at(NOW)).await.unwrap();
        assert_eq!(store.delete_all(t, vec![i]).await.unwrap(), 1);
        assert!(store.get(t, i, at(NOW)).await.unwrap().is_none());
        store.close().await.unwrap();
    }

    #[test]
    fn newest_updated_at_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        store
            .save_all(&[state(t, i, "2026-01-01T10:00:00+01:00", None, "one")])
            .unwrap();
        let older = store
            .save_all(&[state(t, i, "2026-01-01T08:59:59.9999999Z", None, "old")])
            .unwrap();
        assert_eq!(
            older,
            SaveOutcome {
                applied: 0,
                ignored: 1
            }
        );
        assert_eq!(store.get(t, i, at(NOW)).unwrap().unwrap().content, "one");
        let equal = store
            .save_all(&[state(t, i, "2026-01-01T09:00:00Z", None, "same")])
            .unwrap();
        assert_eq!(equal.applied, 1);
        assert_eq!(store.get(t, i, at(NOW)).unwrap().unwrap().content, "same");
    }

    #[test]
    fn tenants_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (a, b, id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        store.save_all(&[state(a, id, NOW, None, "a")]).unwrap();
        store.save_all(&[state(b, id, NOW, None, "b")]).unwrap();
        store.delete_all(a, &[id]).unwrap();
        assert!(store.get(a, id, at(NOW)).unwrap().is_none());
        assert_eq!(store.get(b, id, at(NOW)).unwrap().unwrap().content, "b");
    }

    #[test]
    fn expiry_hides_then_purges() {
        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (t, i, j) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        store
            .save_all(&[
                state(t, i, NOW, Some("2026-01-02T00:00:00Z"), "x"),
                state(t, j, NOW, None, "forever"),
            ])
            .unwrap();
        assert!(store
            .get(t, i, at("2026-01-01T23:59:59Z"))
            .unwrap()
            .is_some());
        assert!(store
            .get(t, i, at("2026-01-02T00:00:00Z"))
            .unwrap()
            .is_none());
        assert_eq!(store.purge_expired(at("2026-01-01T12:00:00Z")).unwrap(), 0);
        assert_eq!(store.purge_expired(at("2026-01-03T00:00:00Z")).unwrap(), 1);
        assert_eq!(store.stats().unwrap().states, 1);
    }

    #[test]
    fn refreshed_expiry_is_not_purged_by_the_old_index_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        store
            .save_all(&[state(t, i, NOW, Some("2026-01-02T00:00:00Z"), "v1")])
            .unwrap();
        store
            .save_all(&[state(
                t,
                i,
                "2026-01-01T01:00:00Z",
                Some("2026-02-01T00:00:00Z"),
                "v2",
            )])
            .unwrap();
        assert_eq!(store.purge_expired(at("2026-01-03T00:00:00Z")).unwrap(), 0);
        assert_eq!(
            store
                .get(t, i, at("2026-01-03T00:00:00Z"))
                .unwrap()
                .unwrap()
                .content,
            "v2"
        );
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            // No background flusher: it would hold the database (and its
            // lock) for a moment after the drop.
            let db = sled::Config::new()
                .path(dir.path())
                .flush_every_ms(None)
                .open()
                .unwrap();
            let meta = db.open_tree(META_TREE).unwrap();
            meta.insert(FORMAT_KEY, &2u32.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        match try_reopen(dir.path()) {
            Err(StoreError::UnsupportedFormat {
                found: 2,
                supported: 1,
            }) => {}
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
    }

    #[test]
    fn saves_are_refused_while_free_space_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        store.save_all(&[state(t, i, NOW, None, "small")]).unwrap();
        // No filesystem has this much free: the guard must refuse, and
        // nothing may change.
        let err = store.ensure_space(u64::MAX / 4).unwrap_err();
        assert!(matches!(err, StoreError::DiskFull), "{err}");
        assert_eq!(store.get(t, i, at(NOW)).unwrap().unwrap().content, "small");
        store.ensure_space(0).unwrap();
    }

    /// The backup rule under concurrent writers, record by record: every
    /// batch acknowledged before the cut is in the scan with exactly its
    /// content, nothing begun after the cut is, and each batch (two states,
    /// or a save then a delete of one) is whole.
    #[test]
    fn a_cut_under_concurrent_writers_is_consistent() {
        use std::sync::atomic::AtomicBool;
        use std::time::Instant;

        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let tenant = Uuid::new_v4();
        // Other tenant's states make the scan last while writers write.
        let fillers: Vec<State> = (0..400)
            .map(|_| state(Uuid::new_v4(), Uuid::new_v4(), NOW, None, "filler"))
            .collect();
        store.save_all(&fillers).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // (key a, key b, one (started, acknowledged) per version, from 1).
        type Log = (Uuid, Uuid, Vec<(Instant, Instant)>);
        let writers: Vec<std::thread::JoinHandle<Log>> = (0..6)
            .map(|w| {
                let (store, stop) = (store.clone(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
                    let mut log = Vec::new();
                    let mut v = 0u32;
                    while !stop.load(Ordering::Relaxed) || v < 20 {
                        v += 1;
                        let started = Instant::now();
                        let content = format!("w{w}-v{v}");
                        if w % 3 == 0 && v % 2 == 0 {
                            // Every third writer deletes both on even versions.
                            store.delete_all(tenant, &[a, b]).unwrap();
                        } else {
                            store
                                .save_all(&[
                                    state(tenant, a, NOW, None, &content),
                                    state(tenant, b, NOW, None, &content),
                                ])
                                .unwrap();
                        }
                        log.push((started, Instant::now()));
                    }
                    (a, b, log)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        let before_cut = Instant::now();
        let cut = store.cut().unwrap();
        let after_cut = Instant::now();
        let mut scanned = std::collections::HashMap::new();
        store
            .scan_cut(&cut, |state| {
                let state = state.unwrap();
                if state.tenant == tenant {
                    scanned.insert(state.id, state.content);
                }
                // Slow enough that writers change many keys mid-scan.
                std::thread::sleep(Duration::from_micros(200));
                true
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        let mut checked = 0;
        for (w, writer) in writers.into_iter().enumerate() {
            let (a, b, log) = writer.join().unwrap();
            let version_of = |id: Uuid| {
                scanned.get(&id).map(|c| {
                    let (who, v) = c.split_once("-v").unwrap();
                    assert_eq!(who, format!("w{w}"));
                    v.parse::<usize>().unwrap()
                })
            };
            let acked_before = log.iter().filter(|(_, acked)| *acked < before_cut).count();
            let started_after = log
                .iter()
                .position(|(started, _)| *started > after_cut)
                .map_or(usize::MAX, |i| i + 1);
            let (in_a, in_b) = (version_of(a), version_of(b));
            assert_eq!(in_a, in_b, "writer {w}: a batch is split");
            // Absent: the last version before the cut was a delete.
            let deletes = w % 3 == 0;
            let possible = |v: usize| {
                v >= acked_before.max(1)
                    && v < started_after
                    && (if deletes {
                        in_a.is_none() == (v % 2 == 0)
                    } else {
                        in_a.is_some()
                    })
                    && in_a.is_none_or(|found| found == v)
            };
            assert!(
                (1..started_after.min(log.len() + 1)).any(possible),
                "writer {w}: {in_a:?} in the backup; {acked_before} acknowledged before the cut, {started_after} began after it"
            );
            assert!(
                log.len() > started_after.min(log.len()),
                "writer {w} kept writing"
            );
            checked += 1;
        }
        assert_eq!(checked, 6);
        assert!(
            cut.pause() < Duration::from_secs(1),
            "the cut paused writers for {:?}",
            cut.pause()
        );
        drop(cut);
        // A second cut is possible once the first is dropped.
        store.cut().unwrap();
    }

    /// What memory answers for (t, i), asked until it does: sled's tree
    /// lock is one per process, so a transaction of any test running
    /// beside this one makes memory give up for that moment.
    fn from_memory(store: &Database, t: Uuid, i: Uuid) -> Option<State> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(found) = store.get_in_memory(t, i, at(NOW)) {
                return found.unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "memory never answered"
            );
            std::thread::yield_now();
        }
    }

    /// A database just opened has its pages on disk: memory alone cannot
    /// answer, `get` pages them in, and from then on memory can.
    #[test]
    fn a_read_from_memory_leaves_pages_on_disk_to_get() {
        let dir = tempfile::tempdir().unwrap();
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            store
                .save_all(&[state(t, i, NOW, None, "on disk")])
                .unwrap();
        }
        let store = reopen(dir.path());
        assert!(store.get_in_memory(t, i, at(NOW)).is_none());
        assert_eq!(
            store.get(t, i, at(NOW)).unwrap().unwrap().content,
            "on disk"
        );
        assert_eq!(from_memory(&store, t, i).unwrap().content, "on disk");
        assert!(from_memory(&store, t, Uuid::new_v4()).is_none());
    }

    /// A read from memory gives up instead of waiting for a transaction,
    /// which holds sled's tree lock from its start to its commit.
    #[test]
    fn a_read_from_memory_does_not_wait_for_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        store.save_all(&[state(t, i, NOW, None, "x")]).unwrap();
        assert_eq!(from_memory(&store, t, i).unwrap().content, "x");
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let meta = store.meta.clone();
        let holder = std::thread::spawn(move || {
            let release_rx = Mutex::new(release_rx);
            meta.transaction(|_| {
                let _ = started_tx.send(());
                let _ = release_rx.lock().map(|rx| rx.recv());
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .unwrap();
        });
        started_rx.recv().unwrap();
        let answer = store.get_in_memory(t, i, at(NOW));
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        assert!(answer.is_none(), "read past a transaction's lock");
        assert_eq!(from_memory(&store, t, i).unwrap().content, "x");
    }

    /// While a writer grows and shrinks the tree (splits and merges of
    /// sled's pages), every answer from memory is the one `get` gives: a
    /// state saved before the readers started is found, one deleted
    /// before is not.
    #[test]
    fn reads_from_memory_agree_with_get_under_splits_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let tenant = Uuid::new_v4();
        let kept: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        let gone: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        let save = |ids: &[Uuid]| {
            let states: Vec<State> = ids
                .iter()
                .map(|id| state(tenant, *id, NOW, None, &id.to_string()))
                .collect();
            store.save_all(&states).unwrap();
        };
        save(&kept);
        save(&gone);
        store.delete_all(tenant, &gone).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let churn: Vec<State> = (0..300)
                        .map(|_| state(tenant, Uuid::new_v4(), NOW, None, &"c".repeat(200)))
                        .collect();
                    store.save_all(&churn).unwrap();
                    let ids: Vec<Uuid> = churn.iter().map(|s| s.id).collect();
                    store.delete_all(tenant, &ids).unwrap();
                }
            })
        };
        let mut answered = 0;
        for round in 0..40 {
            for (index, id) in kept.iter().chain(&gone).enumerate() {
                let Some(found) = store.get_in_memory(tenant, *id, at(NOW)) else {
                    continue;
                };
                answered += 1;
                let found = found.unwrap();
                if index < kept.len() {
                    let content = found.map(|s| s.content);
                    assert_eq!(content, Some(id.to_string()), "round {round}");
                } else {
                    assert!(
                        found.is_none(),
                        "a deleted state came back in round {round}"
                    );
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(answered > 0, "memory never answered");
        // `get` first: it finishes any split or merge the writer left.
        for id in kept.iter().chain(&gone) {
            let from_get = store.get(tenant, *id, at(NOW)).unwrap();
            let in_memory = from_memory(&store, tenant, *id);
            assert_eq!(in_memory.map(|s| s.content), from_get.map(|s| s.content));
        }
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let store = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            store.save_all(&[state(t, i, NOW, None, "kept")]).unwrap();
            store.health_check(at(NOW)).unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.get(t, i, at(NOW)).unwrap().unwrap().content, "kept");
    }
}
