//! The writer: one thread applies every save and delete the service asks
//! for, a whole batch of them in one transaction and one flush.
//!
//! Why a thread of its own rather than a blocking task per write: with a
//! blocking task and a transaction per write, each write parked a thread
//! in the group commit, every flush woke all of them, and every transaction
//! made sled write its log twice (see [`super::changes`]). On one core that
//! cost ~14 context switches and ~200 µs of CPU per save, storage alone
//! (`benches/storage_cost.rs`, `docs/performance.md`). Here the async side
//! queues a write and awaits its answer; the writer takes everything
//! queued, applies it in one transaction, flushes once and answers them
//! all: ~1 context switch and ~50 µs per save. While a batch is written,
//! the next one queues up, so batches grow with the load; a lone write
//! waits only for the writer's few yields (see [`make_way`]).
//!
//! The guarantee is the one a flush per write gave: a write is answered
//! only after a flush that started after its transaction had succeeded
//! (the flush goes through [`super::group_commit`], which purges and health
//! probes share). A write that failed on its own is answered with its own
//! error and does not stop the others; a failed flush fails every write it
//! was to cover.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc as std_mpsc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::changes::{Write, Written};
use super::Database;
use crate::model::State;
use crate::store::{SaveOutcome, StoreError};

/// Writes waiting for the writer; a sender beyond this waits for room.
const QUEUE_CAPACITY: usize = 1024;

/// Writes applied before one flush, at most; bounds how long the first
/// write of a long queue waits for its answer.
const MAX_BATCH: usize = 256;

/// Yields before taking a batch (see [`make_way`]). Measured on one core:
/// 1 left ~0.7 writer wake-ups per save, 8 left ~0.1.
const YIELDS: u32 = 8;

/// How long dropping the last handle waits for the thread to let go of the
/// database (it is idle unless a flush is running).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// One write and where its answer goes.
struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The handle the engine holds; dropping it stops the thread.
#[derive(Debug)]
pub struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    // In a mutex only to make the handle `Sync`; `drop` alone reads it.
    stopped: Mutex<std_mpsc::Receiver<()>>,
}

impl Writer {
    /// Starts the writer thread over `db`.
    pub fn start(db: Database) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        // Dropped by the thread as it ends, which is what `drop` waits for.
        let (on_stop, stopped) = std_mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sled-writer".into())
            .spawn(move || {
                run(&db, queue);
                // In this order: the database is let go of before `drop`
                // of the handle hears that the thread has ended.
                drop(db);
                drop(on_stop);
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            jobs: Some(jobs),
            stopped: Mutex::new(stopped),
        })
    }

    /// Saves `states` atomically (see [`Database::save_all`]); durable
    /// when it returns.
    pub async fn save_all(&self, states: Vec<State>) -> Result<SaveOutcome, StoreError> {
        Ok(self.write(Write::Save(states)).await?.saved)
    }

    /// Deletes (tenant, id) for each id atomically (see
    /// [`Database::delete_all`]); durable when it returns.
    pub async fn delete_all(&self, tenant: Uuid, ids: Vec<Uuid>) -> Result<usize, StoreError> {
        Ok(self.write(Write::Delete { tenant, ids }).await?.deleted)
    }

    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Job { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what is
        // queued; waiting lets a reopen in this process find the database
        // unlocked. Bounded: a wedged flush never returns.
        self.jobs = None;
        let stopped = self
            .stopped
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Err(std_mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(STOP_WAIT) {
            log::warn!(
                "the sled writer thread did not stop within {STOP_WAIT:?} (a flush is stuck?); \
                 the database stays open until the process exits"
            );
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable(
        "the database writer has stopped (see the log); restart flow-store".into(),
    )
}

/// The thread: batches until the queue closes.
fn run(db: &Database, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        make_way();
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A panic (a bug) answers its batch with an error through the
        // dropped reply senders, and the writer goes on with the next one,
        // as a panicking blocking task did.
        if catch_unwind(AssertUnwindSafe(|| write_batch(db, batch))).is_err() {
            log::error!("the sled writer panicked while writing a batch; its writes were refused");
        }
    }
}

/// Lets whatever else is ready to run on this core run before the batch is
/// taken: on a busy core that is the workers opening the next saves, which
/// then join this batch instead of each waiting for a batch of its own. On
/// an idle core (or with a core to spare) a yield returns at once, so a
/// lone write is hardly delayed.
///
/// Why: opening a save (two ES384 verifies and an ECDH agreement, ~400 µs
/// on one core) takes longer than writing one, so without this the writer
/// woke for each save and wrote batches of one: ~2 writer and ~5 sled I/O
/// thread context switches per save on one core. With it, ~0.1 and ~0.4
/// (`docs/performance.md`, "The writer, and sled's log").
fn make_way() {
    for _ in 0..YIELDS {
        std::thread::yield_now();
    }
}

/// Applies every job of `batch` and answers each (see
/// [`Database::write_all`]).
fn write_batch(db: &Database, batch: Vec<Job>) {
    let (writes, replies): (Vec<Write>, Vec<_>) =
        batch.into_iter().map(|job| (job.write, job.reply)).unzip();
    for (reply, result) in replies.into_iter().zip(db.write_all(&writes)) {
        // A caller that gave up (timed out) is no longer there.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::tests::{at, state, NOW, TEST_CACHE_BYTES};
    use std::sync::Arc;

    /// Many concurrent writers, far fewer flushes, and every answered
    /// write is in the database when its answer arrives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_batched_and_each_is_stored_when_answered() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let writer = Arc::new(Writer::start(db.clone()).unwrap());
        let tenant = Uuid::new_v4();
        let flushes_before = db.flushes();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (writer, db) = (writer.clone(), db.clone());
                tokio::spawn(async move {
                    for n in 0..20 {
                        let id = Uuid::new_v4();
                        let content = format!("{n}");
                        let saved = writer
                            .save_all(vec![state(tenant, id, NOW, None, &content)])
                            .await
                            .unwrap();
                        assert_eq!(saved.applied, 1);
                        assert!(db.get(tenant, id, at(NOW)).unwrap().is_some());
                        if n % 2 == 0 {
                            assert_eq!(writer.delete_all(tenant, vec![id]).await.unwrap(), 1);
                            assert!(db.get(tenant, id, at(NOW)).unwrap().is_none());
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let flushes = db.flushes() - flushes_before;
        assert!(flushes < 32 * 30 / 2, "{flushes} flushes for 960 writes");
        assert_eq!(db.stats().unwrap().states, 32 * 10);
    }

    #[test]
    fn dropping_the_handle_stops_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let writer = Writer::start(db.clone()).unwrap();
        let handles = db.handles();
        drop(writer);
        assert_eq!(
            db.handles(),
            handles - 1,
            "the writer still holds the database"
        );
    }
}
