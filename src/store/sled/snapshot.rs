//! A consistent point-in-time scan of the sled `states` tree, for online
//! backups. sled 0.34 has no snapshots and its iterators are not isolated,
//! so the cut is made here:
//!
//! - **the write gate**: every write holds [`WriteGate`] shared across its
//!   transaction and its commit; opening a backup epoch takes it exclusively
//!   for an instant, so no write straddles the cut: each one either
//!   completed before it (and the scan sees it) or starts after it;
//! - **pre-images**: during an epoch, every transaction that changes a key
//!   first records that key's value at the cut (or "absent") in the epoch's
//!   [`PreImages`], inside the transaction, before it commits; the first
//!   record wins, so retries and later writes never overwrite it;
//! - **the merge**: the scan walks the tree in key order and emits, per key,
//!   the pre-image when one was recorded, else the tree's value; keys
//!   deleted since the cut come from the pre-images, in order.
//!
//! So every write completed before the cut is in the scan exactly as
//! written, nothing written after it is, and a batch is whole or absent.
//! Writers pause only while the epoch opens (measured: [`Cut::pause`]).
//! The cost: while a backup runs, memory for one pre-image per key changed
//! since the cut (at most the size of the database, typically the states
//! saved during the backup).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use sled::IVec;

/// Writers share it; opening an epoch takes it alone. std's `RwLock` on
/// Linux lets a waiting exclusive locker in before new shared ones, so the
/// cut waits only for the writes already under way.
#[derive(Debug, Default)]
pub struct WriteGate {
    lock: RwLock<()>,
    epoch: Mutex<Option<Arc<PreImages>>>,
}

/// What a writer holds while it writes: the gate, shared, and the epoch
/// open when it started, if any.
pub struct WriterPass<'a> {
    _shared: RwLockReadGuard<'a, ()>,
    epoch: Option<Arc<PreImages>>,
}

impl WriterPass<'_> {
    /// Records `old`, the value `key` had before this write changes it,
    /// unless a pre-image of `key` is recorded already. Call it inside the
    /// transaction, before the change commits.
    pub fn before_change(&self, key: &[u8], old: Option<&IVec>) {
        if let Some(epoch) = &self.epoch {
            epoch.record(key, old);
        }
    }
}

/// The values keys had at the cut, for the keys changed since.
#[derive(Debug, Default)]
pub struct PreImages {
    values: Mutex<BTreeMap<Vec<u8>, Option<IVec>>>,
}

impl PreImages {
    fn record(&self, key: &[u8], old: Option<&IVec>) {
        self.lock()
            .entry(key.to_vec())
            .or_insert_with(|| old.cloned());
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Option<IVec>>> {
        // The map is only ever inserted into whole entries; a panicking
        // holder cannot leave it half-changed.
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pre-image of `key`: `None` if the key has not changed since the
    /// cut, `Some(None)` if it was absent at the cut.
    fn get(&self, key: &[u8]) -> Option<Option<IVec>> {
        self.lock().get(key).cloned()
    }

    /// Keys strictly between `after` (or the start) and `before` (or the
    /// end) that existed at the cut, with their values then.
    fn present_between(&self, after: Option<&[u8]>, before: Option<&[u8]>) -> Vec<(Vec<u8>, IVec)> {
        if let (Some(a), Some(b)) = (after, before) {
            // BTreeMap::range panics on an empty or inverted range.
            if a >= b {
                return Vec::new();
            }
        }
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let end = before.map_or(Bound::Unbounded, Bound::Excluded);
        self.lock()
            .range::<[u8], _>((start, end))
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect()
    }
}

/// Why an epoch could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("a backup is already running; wait for it to finish")]
pub struct EpochBusy;

impl WriteGate {
    /// Enters the gate for one write.
    pub fn writer(&self) -> WriterPass<'_> {
        // The guarded value is `()`: a poisoned lock protects nothing.
        let shared = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        let epoch = self.current();
        WriterPass {
            _shared: shared,
            epoch,
        }
    }

    fn current(&self) -> Option<Arc<PreImages>> {
        self.epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes the cut: waits for the writes under way, opens an epoch, and
    /// lets writers go on. One epoch at a time.
    pub fn open_epoch(self: &Arc<Self>) -> Result<Cut, EpochBusy> {
        let started = Instant::now();
        let exclusive = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let pre_images = {
            let mut epoch = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
            if epoch.is_some() {
                return Err(EpochBusy);
            }
            let pre_images = Arc::new(PreImages::default());
            *epoch = Some(Arc::clone(&pre_images));
            pre_images
        };
        drop(exclusive);
        Ok(Cut {
            gate: Arc::clone(self),
            pre_images,
            pause: started.elapsed(),
        })
    }
}

/// An open epoch; dropping it closes the epoch.
#[derive(Debug)]
pub struct Cut {
    gate: Arc<WriteGate>,
    pre_images: Arc<PreImages>,
    pause: Duration,
}

impl Cut {
    /// How long opening the epoch took, writers paused for at most that.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// Walks `tree` and emits every (key, value) as it was at the cut, in
    /// key order, until `emit` returns `false`.
    pub fn scan(
        &self,
        tree: &sled::Tree,
        mut emit: impl FnMut(&[u8], &IVec) -> bool,
    ) -> Result<(), sled::Error> {
        let mut last: Option<IVec> = None;
        for entry in tree.iter() {
            let (key, current) = entry?;
            // Deleted since the cut and sorting before this key: the
            // deletion committed before the iterator passed, so its
            // pre-image is recorded already.
            for (k, v) in self.pre_images.present_between(last.as_deref(), Some(&key)) {
                if !emit(&k, &v) {
                    return Ok(());
                }
            }
            // Read after the tree's value: a change the iterator saw was
            // recorded before it committed.
            let at_cut = match self.pre_images.get(&key) {
                Some(pre) => pre,
                None => Some(current),
            };
            if let Some(value) = at_cut {
                if !emit(&key, &value) {
                    return Ok(());
                }
            }
            last = Some(key);
        }
        for (k, v) in self.pre_images.present_between(last.as_deref(), None) {
            if !emit(&k, &v) {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let mut epoch = self
            .gate
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Writers still holding this epoch's Arc record into it harmlessly.
        *epoch = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap();
        (dir, db.open_tree("t").unwrap())
    }

    fn scan_all(cut: &Cut, tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        cut.scan(tree, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        out
    }

    // Applies one change the way the engine does: pre-image first.
    fn change(gate: &WriteGate, tree: &sled::Tree, key: &[u8], value: Option<&[u8]>) {
        let pass = gate.writer();
        let old = tree.get(key).unwrap();
        pass.before_change(key, old.as_ref());
        match value {
            Some(v) => tree.insert(key, v).unwrap(),
            None => tree.remove(key).unwrap(),
        };
    }

    #[test]
    fn the_scan_shows_the_cut_whatever_changes_after_it() {
        let (_dir, tree) = tree();
        let gate = Arc::new(WriteGate::default());
        for k in [b"a", b"c", b"e"] {
            change(&gate, &tree, k, Some(b"before"));
        }
        let cut = gate.open_epoch().unwrap();
        change(&gate, &tree, b"a", None); // deleted, sorts first
        change(&gate, &tree, b"b", Some(b"new")); // created after the cut
        change(&gate, &tree, b"c", Some(b"after")); // replaced
        change(&gate, &tree, b"c", Some(b"later")); // replaced again
        change(&gate, &tree, b"e", None); // deleted, sorts last
        let seen = scan_all(&cut, &tree);
        let want: Vec<(Vec<u8>, Vec<u8>)> = [b"a", b"c", b"e"]
            .iter()
            .map(|k| (k.to_vec(), b"before".to_vec()))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn one_epoch_at_a_time_and_closing_it_stops_recording() {
        let (_dir, tree) = tree();
        let gate = Arc::new(WriteGate::default());
        let cut = gate.open_epoch().unwrap();
        assert!(gate.open_epoch().is_err());
        drop(cut);
        change(&gate, &tree, b"x", Some(b"1"));
        let cut = gate.open_epoch().unwrap();
        assert_eq!(scan_all(&cut, &tree), vec![(b"x".to_vec(), b"1".to_vec())]);
    }
}
