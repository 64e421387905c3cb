//! Saves and deletes as sled transactions, one write at a time or many
//! writes in one transaction.
//!
//! Why many in one: a sled 0.34 transaction seals and writes the log buffer
//! twice (`pin_log`: once before it, once for its batch manifest), each a
//! `pwrite` + `sync_file_range` on sled's I/O threads, whatever the flush
//! does after it: ~3 I/O waits per save with a transaction per write
//! (`perf record -e sched:sched_switch` on the end-to-end bench; see
//! `docs/performance.md`). So the writer ([`super::writer`]) applies a
//! whole batch of writes in one transaction; each write still succeeds or
//! fails as a whole, and its outcome is its own.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use uuid::Uuid;

use super::codec::{self, DecodeError};
use super::snapshot::WriterPass;
use super::Database;
use crate::model::State;
use crate::store::{SaveOutcome, StoreError};

/// One atomic write.
#[derive(Debug, Clone)]
pub enum Write {
    /// Save these states (see [`Database::save_all`]).
    Save(Vec<State>),
    /// Delete these states of `tenant` (see [`Database::delete_all`]).
    Delete {
        /// Whose states.
        tenant: Uuid,
        /// Which states.
        ids: Vec<Uuid>,
    },
}

/// What one write did: a save fills `saved`, a delete `deleted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// States saved and states ignored (the stored one is newer).
    pub saved: SaveOutcome,
    /// States that existed and were deleted.
    pub deleted: usize,
}

/// A write checked and encoded, ready for a transaction.
pub(super) enum Prepared<'a> {
    Save(Vec<(&'a State, Vec<u8>)>),
    Delete { tenant: Uuid, ids: &'a [Uuid] },
}

/// The two trees a write changes, inside a transaction.
pub(super) struct Trees<'t> {
    states: &'t TransactionalTree,
    expiry: &'t TransactionalTree,
}

type InTransaction<T> = Result<T, ConflictableTransactionError<DecodeError>>;

impl Database {
    /// Applies `writes`, each atomically and all durable on return, with
    /// one transaction and one flush for all of them. One result per write,
    /// in order: a write refused on its own (no space, a stored state that
    /// cannot be read) does not fail the others.
    pub fn write_all(&self, writes: &[Write]) -> Vec<Result<Written, StoreError>> {
        // One pass, held until the flush (see `save_all`).
        let pass = self.writer_pass();
        let prepared: Vec<_> = writes.iter().map(|w| self.prepare(w)).collect();
        let mut results = self.transact_many(&prepared, &pass);
        if results.iter().any(Result::is_ok) {
            if let Err(e) = self.commit() {
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(e.clone());
                }
            }
        }
        results
    }

    /// Checks the space `write` needs and encodes its states.
    pub(super) fn prepare<'a>(&self, write: &'a Write) -> Result<Prepared<'a>, StoreError> {
        match write {
            Write::Save(states) => self.prepare_save(states),
            Write::Delete { tenant, ids } => Ok(Prepared::Delete {
                tenant: *tenant,
                ids,
            }),
        }
    }

    pub(super) fn prepare_save<'a>(&self, states: &'a [State]) -> Result<Prepared<'a>, StoreError> {
        let encoded: Vec<(&State, Vec<u8>)> =
            states.iter().map(|s| (s, codec::encode(s))).collect();
        let bytes = encoded.iter().map(|(_, v)| v.len() as u64).sum();
        self.ensure_space(bytes)?;
        // There was room for it: `/health` no longer reports the disk full.
        self.space_wanted
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(Prepared::Save(encoded))
    }

    /// Runs one prepared write as its own transaction (not yet durable).
    pub(super) fn transact_one(
        &self,
        write: &Prepared<'_>,
        pass: &WriterPass<'_>,
    ) -> Result<Written, StoreError> {
        self.transact(|trees| write.apply_in(trees, pass))
            .map_err(|e| self.tx_err(e))
    }

    /// Runs every ready write in one transaction (not yet durable). If a
    /// write aborts it (a stored state it replaces cannot be read), each
    /// runs alone instead, so that only that one fails.
    fn transact_many(
        &self,
        prepared: &[Result<Prepared<'_>, StoreError>],
        pass: &WriterPass<'_>,
    ) -> Vec<Result<Written, StoreError>> {
        let ready = prepared.iter().filter(|p| p.is_ok()).count();
        if ready == 0 {
            // No transaction at all: even an empty one writes sled's log,
            // and a refused save may mean the disk is full (see
            // `MIN_FREE_BYTES`).
            return prepared
                .iter()
                .filter_map(|p| p.as_ref().err().cloned())
                .map(Err)
                .collect();
        }
        let together = self.transact(|trees| {
            prepared
                .iter()
                .map(|p| match p {
                    Ok(write) => write.apply_in(trees, pass).map(Ok),
                    Err(refused) => Ok(Err(refused.clone())),
                })
                .collect::<InTransaction<Vec<_>>>()
        });
        match together {
            Ok(results) => results,
            Err(TransactionError::Abort(_)) if ready > 1 => prepared
                .iter()
                .map(|p| match p {
                    Ok(write) => self.transact_one(write, pass),
                    Err(refused) => Err(refused.clone()),
                })
                .collect(),
            Err(e) => {
                let e = self.tx_err(e);
                prepared
                    .iter()
                    .map(|p| Err(p.as_ref().err().unwrap_or(&e).clone()))
                    .collect()
            }
        }
    }

    /// Runs `body` as one transaction over the states and expiry trees.
    fn transact<T>(
        &self,
        body: impl Fn(&Trees<'_>) -> InTransaction<T>,
    ) -> Result<T, TransactionError<DecodeError>> {
        (&self.states, &self.expiry).transaction(|(states, expiry)| body(&Trees { states, expiry }))
    }
}

impl Prepared<'_> {
    /// This write's changes inside a transaction.
    fn apply_in(&self, trees: &Trees<'_>, pass: &WriterPass<'_>) -> InTransaction<Written> {
        match self {
            Prepared::Save(encoded) => {
                save_in(trees, encoded, pass).map(|saved| Written { saved, deleted: 0 })
            }
            Prepared::Delete { tenant, ids } => {
                delete_in(trees, *tenant, ids, pass).map(|deleted| Written {
                    saved: SaveOutcome::default(),
                    deleted,
                })
            }
        }
    }
}

/// Each state replaces the stored one only if its `updatedAt` is equal or
/// newer; the expiry index follows.
fn save_in(
    trees: &Trees<'_>,
    encoded: &[(&State, Vec<u8>)],
    pass: &WriterPass<'_>,
) -> InTransaction<SaveOutcome> {
    let mut outcome = SaveOutcome::default();
    for (state, value) in encoded {
        let key = codec::state_key(state.tenant, state.id);
        let old = trees.states.get(key)?;
        if let Some(old) = &old {
            let old_meta = codec::decode_meta(old).map_err(ConflictableTransactionError::Abort)?;
            if old_meta.updated_at > state.meta.updated_at {
                outcome.ignored += 1;
                continue;
            }
            if let Some(at) = &old_meta.expires_at {
                trees
                    .expiry
                    .remove(&codec::expiry_key(at.unix_nanos(), state.tenant, state.id)[..])?;
            }
        }
        pass.before_change(&key, old.as_ref());
        trees.states.insert(&key[..], value.as_slice())?;
        if let Some(at) = &state.meta.expires_at {
            trees.expiry.insert(
                &codec::expiry_key(at.unix_nanos(), state.tenant, state.id)[..],
                &[][..],
            )?;
        }
        outcome.applied += 1;
    }
    Ok(outcome)
}

/// Deletes (tenant, id) for each id and its expiry index entry; returns how
/// many existed.
fn delete_in(
    trees: &Trees<'_>,
    tenant: Uuid,
    ids: &[Uuid],
    pass: &WriterPass<'_>,
) -> InTransaction<usize> {
    let mut removed = 0;
    for &id in ids {
        let key = codec::state_key(tenant, id);
        if let Some(old) = trees.states.remove(&key[..])? {
            pass.before_change(&key, Some(&old));
            removed += 1;
            let meta = codec::decode_meta(&old).map_err(ConflictableTransactionError::Abort)?;
            if let Some(at) = &meta.expires_at {
                trees
                    .expiry
                    .remove(&codec::expiry_key(at.unix_nanos(), tenant, id)[..])?;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::tests::{at, state, NOW, TEST_CACHE_BYTES};

    /// A write refused on its own (here: it would replace a stored value
    /// that cannot be read) gets its error; the other writes of its
    /// transaction are stored, with one flush for all.
    #[test]
    fn a_refused_write_does_not_fail_the_others_of_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (tenant, bad, good, old) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        db.states
            .insert(codec::state_key(tenant, bad), &b"not a stored state"[..])
            .unwrap();
        db.save_all(&[state(tenant, old, NOW, None, "to delete")])
            .unwrap();
        let flushes_before = db.flushes();
        let results = db.write_all(&[
            Write::Save(vec![state(tenant, bad, NOW, None, "refused")]),
            Write::Save(vec![state(tenant, good, NOW, None, "stored")]),
            Write::Delete {
                tenant,
                ids: vec![old, Uuid::new_v4()],
            },
        ]);
        assert!(
            matches!(results[0], Err(StoreError::Corrupt(_))),
            "{:?}",
            results[0]
        );
        assert_eq!(results[1].as_ref().unwrap().saved.applied, 1);
        assert_eq!(results[2].as_ref().unwrap().deleted, 1);
        assert_eq!(db.flushes() - flushes_before, 1, "one flush for the batch");
        assert_eq!(
            db.get(tenant, good, at(NOW)).unwrap().unwrap().content,
            "stored"
        );
        assert!(db.get(tenant, old, at(NOW)).unwrap().is_none());
    }

    /// Writes in one transaction apply in order, each seeing the ones
    /// before it, exactly as if each were its own transaction.
    #[test]
    fn writes_of_one_transaction_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (tenant, id, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let results = db.write_all(&[
            Write::Save(vec![state(
                tenant,
                id,
                "2026-01-01T10:00:00Z",
                None,
                "newer",
            )]),
            Write::Save(vec![state(
                tenant,
                id,
                "2026-01-01T09:00:00Z",
                None,
                "older",
            )]),
            Write::Save(vec![state(
                tenant,
                gone,
                NOW,
                Some("2026-06-01T00:00:00Z"),
                "short-lived",
            )]),
            Write::Delete {
                tenant,
                ids: vec![gone],
            },
        ]);
        let written: Vec<Written> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            written[0].saved,
            SaveOutcome {
                applied: 1,
                ignored: 0
            }
        );
        assert_eq!(
            written[1].saved,
            SaveOutcome {
                applied: 0,
                ignored: 1
            }
        );
        assert_eq!(written[3].deleted, 1);
        assert_eq!(
            db.get(tenant, id, at(NOW)).unwrap().unwrap().content,
            "newer"
        );
        assert!(db.get(tenant, gone, at(NOW)).unwrap().is_none());
        // The deleted state's expiry entry went with it.
        assert_eq!(db.purge_expired(at("2027-01-01T00:00:00Z")).unwrap(), 0);
        assert_eq!(db.expiry.len(), 0);
    }

    /// A batch whose writes were all refused before their transaction
    /// (for space) writes nothing at all to sled's log: on a full disk
    /// sled must not be asked to write.
    #[test]
    fn a_batch_of_refused_writes_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        db.save_all(&[state(Uuid::new_v4(), Uuid::new_v4(), NOW, None, "before")])
            .unwrap();
        db.db.flush().unwrap();
        let pass = db.writer_pass();
        let results = db.transact_many(
            &[Err(StoreError::DiskFull), Err(StoreError::DiskFull)],
            &pass,
        );
        drop(pass);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(StoreError::DiskFull))),
            "{results:?}"
        );
        assert_eq!(db.db.flush().unwrap(), 0, "sled's log was written");
    }
}
