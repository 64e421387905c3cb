//! The state store: sled on local disk, keyed by (tenant, id).
//!
//! Guarantees, each relied on by the HTTP layer's 204:
//! - a save or delete of several states is one sled transaction (all or
//!   nothing);
//! - a save replaces a stored state only when its `updatedAt` instant is
//!   equal or newer (last writer by `updatedAt` wins, retries are harmless);
//! - every write returns only after `flush`, which fsyncs sled's log, so an
//!   acknowledged write survives a crash or power loss;
//! - expired states read as absent and are purged by [`Store::purge_expired`].
//!
//! The API is synchronous (sled is); async callers use `spawn_blocking`.
//! Nothing here knows about HTTP or JOSE.

pub mod codec;
pub mod error;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::State;
pub use error::StoreError;

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

/// What a save did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveOutcome {
    /// States written (new, or replacing an older or equal `updatedAt`).
    pub applied: usize,
    /// States ignored because the stored one is newer.
    pub ignored: usize,
}

/// The database handle. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct Store {
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if missing) the database at `path` with a page cache
    /// of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        let err = |e| StoreError::from_sled(e, path);
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(err)?;
        let store = Store {
            states: db.open_tree(STATES_TREE).map_err(err)?,
            expiry: db.open_tree(EXPIRY_TREE).map_err(err)?,
            meta: db.open_tree(META_TREE).map_err(err)?,
            db,
            path: path.to_path_buf(),
            space_wanted: Arc::new(AtomicU64::new(0)),
            health_probe: Arc::new(Mutex::new(())),
        };
        store.check_format()?;
        Ok(store)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: sled::Error) -> StoreError {
        StoreError::from_sled(e, &self.path)
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
        let encoded: Vec<(&State, Vec<u8>)> =
            states.iter().map(|s| (s, codec::encode(s))).collect();
        let bytes = encoded.iter().map(|(_, v)| v.len() as u64).sum();
        self.ensure_space(bytes)?;
        let outcome = (&self.states, &self.expiry)
            .transaction(|(tx_states, tx_expiry)| {
                let mut outcome = SaveOutcome::default();
                for (state, value) in &encoded {
                    let key = codec::state_key(state.tenant, state.id);
                    if let Some(old) = tx_states.get(key)? {
                        let old_meta = codec::decode_meta(&old)
                            .map_err(ConflictableTransactionError::Abort)?;
                        if old_meta.updated_at > state.meta.updated_at {
                            outcome.ignored += 1;
                            continue;
                        }
                        if let Some(at) = &old_meta.expires_at {
                            tx_expiry.remove(
                                &codec::expiry_key(at.unix_nanos(), state.tenant, state.id)[..],
                            )?;
                        }
                    }
                    tx_states.insert(&key[..], value.as_slice())?;
                    if let Some(at) = &state.meta.expires_at {
                        tx_expiry.insert(
                            &codec::expiry_key(at.unix_nanos(), state.tenant, state.id)[..],
                            &[][..],
                        )?;
                    }
                    outcome.applied += 1;
                }
                Ok(outcome)
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush()?;
        self.space_wanted.store(0, Ordering::Relaxed);
        Ok(outcome)
    }

    /// The state (tenant, id), or `None` if absent or expired at `now`.
    pub fn get(
        &self,
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<State>, StoreError> {
        let Some(value) = self
            .states
            .get(codec::state_key(tenant, id))
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let state = codec::decode(tenant, id, &value)?;
        Ok((!state.is_expired(now)).then_some(state))
    }

    /// Deletes (tenant, id) for each id atomically; unknown ids are ignored.
    /// Returns how many existed. Durable when it returns.
    pub fn delete_all(&self, tenant: Uuid, ids: &[Uuid]) -> Result<usize, StoreError> {
        let removed = (&self.states, &self.expiry)
            .transaction(|(tx_states, tx_expiry)| {
                let mut removed = 0;
                for &id in ids {
                    if let Some(old) = tx_states.remove(&codec::state_key(tenant, id)[..])? {
                        removed += 1;
                        let meta = codec::decode_meta(&old)
                            .map_err(ConflictableTransactionError::Abort)?;
                        if let Some(at) = &meta.expires_at {
                            tx_expiry
                                .remove(&codec::expiry_key(at.unix_nanos(), tenant, id)[..])?;
                        }
                    }
                }
                Ok(removed)
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush()?;
        Ok(removed)
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
            self.flush()?;
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
        self.flush()
    }

    /// Number of states stored (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no state is stored.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    fn tx_err(&self, e: TransactionError<codec::DecodeError>) -> StoreError {
        match e {
            TransactionError::Abort(decode) => StoreError::Corrupt(decode),
            TransactionError::Storage(e) => self.err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StateMeta, Timestamp};

    fn state(tenant: Uuid, id: Uuid, updated: &str, expires: Option<&str>, content: &str) -> State {
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

    fn at(text: &str) -> OffsetDateTime {
        Timestamp::parse(text).unwrap().instant()
    }

    const NOW: &str = "2026-01-01T00:00:00Z";
    const TEST_CACHE_BYTES: u64 = 8 * 1024 * 1024;

    /// Opens a database this process just closed: sled's background
    /// flusher keeps it (and its lock) for up to one flush interval after
    /// the last handle is dropped.
    fn reopen(path: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(path, TEST_CACHE_BYTES) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other.unwrap(),
            }
        }
    }

    /// `/health` from a load balancer and the watchdog's check overlap; each
    /// must read back its own probe, not fail on the other's.
    #[test]
    fn concurrent_health_checks_all_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), TEST_CACHE_BYTES).unwrap();
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

    #[test]
    fn newest_updated_at_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), TEST_CACHE_BYTES).unwrap();
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
        let store = Store::open(dir.path(), TEST_CACHE_BYTES).unwrap();
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
        let store = Store::open(dir.path(), TEST_CACHE_BYTES).unwrap();
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
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn refreshed_expiry_is_not_purged_by_the_old_index_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), TEST_CACHE_BYTES).unwrap();
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
        match Store::open(dir.path(), TEST_CACHE_BYTES) {
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
        let store = Store::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        store.save_all(&[state(t, i, NOW, None, "small")]).unwrap();
        // No filesystem has this much free: the guard must refuse, and
        // nothing may change.
        let err = store.ensure_space(u64::MAX / 4).unwrap_err();
        assert!(matches!(err, StoreError::DiskFull), "{err}");
        assert_eq!(store.get(t, i, at(NOW)).unwrap().unwrap().content, "small");
        store.ensure_space(0).unwrap();
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let store = Store::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            store.save_all(&[state(t, i, NOW, None, "kept")]).unwrap();
            store.health_check(at(NOW)).unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.get(t, i, at(NOW)).unwrap().unwrap().content, "kept");
    }
}
