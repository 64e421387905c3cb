//! The PostgreSQL engine: states in a database that any number of
//! flow-store nodes share, for high availability and scale-out.
//!
//! The same guarantees as the sled engine, in SQL:
//! - one transaction per call: a save or delete of several states is all
//!   or nothing, and returns only after COMMIT (with `synchronous_commit`
//!   on, so a 204 survives the loss of the database server's power);
//! - the `updatedAt` rule is one conditional upsert per state
//!   (`ON CONFLICT … DO UPDATE … WHERE stored <= incoming`), atomic per row
//!   at READ COMMITTED, so writers on different nodes cannot undo a newer
//!   state; instants are compared at full (nanosecond) precision;
//! - expired states read as absent, and the sweeper deletes them in bounded
//!   batches that skip rows another node is deleting or writing;
//! - every call is bounded by `statement_timeout`: a database that does not
//!   answer gives [`StoreError::Unavailable`] (503), and once it answers
//!   again the pool replaces its dead connections by itself.
//!
//! [`connect`] turns settings into a pool, [`schema`] owns the tables,
//! [`reference`] reads Boomi's reference store for `flow-store migrate`.

pub mod connect;
pub mod reference;
pub mod schema;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool, PoolError};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{SaveOutcome, Snapshot, Store, StoreError, StoreStats};
use crate::model::{State, StateMeta, Timestamp};
pub use connect::PostgresOptions;

/// States the sweeper deletes per statement: bounds the locks and the WAL
/// of one statement however many states expired at once.
const PURGE_BATCH: i64 = 1000;

const COLUMNS: &str = "tenant, id, parent, flow, flow_version, current_map_element, \
     current_user_id, is_done, created_at_text, created_at, updated_at_text, updated_at, \
     updated_seconds, updated_nanos, expires_at_text, expires_at, expires_seconds, \
     expires_nanos, content";

/// The conditional upsert: replaces the stored row only when its instant
/// is older than or equal to the incoming one. Affects 0 rows when ignored.
const UPSERT: &str = "INSERT INTO flow_store_states (tenant, id, parent, flow, flow_version, \
     current_map_element, current_user_id, is_done, created_at_text, created_at, \
     updated_at_text, updated_at, updated_seconds, updated_nanos, expires_at_text, expires_at, \
     expires_seconds, expires_nanos, content) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
     ON CONFLICT (tenant, id) DO UPDATE SET parent = EXCLUDED.parent, flow = EXCLUDED.flow, \
     flow_version = EXCLUDED.flow_version, current_map_element = EXCLUDED.current_map_element, \
     current_user_id = EXCLUDED.current_user_id, is_done = EXCLUDED.is_done, \
     created_at_text = EXCLUDED.created_at_text, created_at = EXCLUDED.created_at, \
     updated_at_text = EXCLUDED.updated_at_text, updated_at = EXCLUDED.updated_at, \
     updated_seconds = EXCLUDED.updated_seconds, updated_nanos = EXCLUDED.updated_nanos, \
     expires_at_text = EXCLUDED.expires_at_text, expires_at = EXCLUDED.expires_at, \
     expires_seconds = EXCLUDED.expires_seconds, expires_nanos = EXCLUDED.expires_nanos, \
     content = EXCLUDED.content \
     WHERE (flow_store_states.updated_seconds, flow_store_states.updated_nanos) \
     <= (EXCLUDED.updated_seconds, EXCLUDED.updated_nanos)";

/// Not expired at the instant ($3, $4): no expiry, or a later one.
const NOT_EXPIRED: &str =
    "(expires_seconds IS NULL OR (expires_seconds, expires_nanos) > ($3, $4))";

/// The PostgreSQL engine as the service holds it.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    timeout: Duration,
    // One snapshot at a time (see `Store::snapshot`).
    snapshots: Arc<Semaphore>,
}

impl std::fmt::Debug for PostgresStore {
    // The pool's configuration holds the password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, applies the migrations (refusing a newer schema) and
    /// returns the engine. Fails when the database cannot be reached.
    pub async fn open(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let store = PostgresStore::unopened(options)?;
        store
            .bounded(async {
                let mut client = store.client().await?;
                schema::migrate(&mut client).await
            })
            .await?;
        Ok(store)
    }

    /// Connects and reads the schema version without changing anything
    /// (for `flow-store check`): proves the server is reachable and the
    /// credentials are accepted.
    pub async fn probe(options: &PostgresOptions) -> Result<u32, StoreError> {
        let store = PostgresStore::unopened(options)?;
        let version = store
            .bounded(async { schema::version(&*store.client().await?).await })
            .await;
        store.pool.close();
        version
    }

    /// The engine over a pool that has not connected yet.
    fn unopened(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        Ok(PostgresStore {
            pool: connect::pool(options)?,
            timeout: options.statement_timeout,
            snapshots: Arc::new(Semaphore::new(1)),
        })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        checkout(&self.pool).await
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.timeout, work).await
    }

    async fn save_all_now(&self, mut states: Vec<State>) -> Result<SaveOutcome, StoreError> {
        // One lock order for every transaction: two batches touching the
        // same states on two nodes wait for each other instead of
        // deadlocking. The sort is stable, so repeats keep their order.
        states.sort_by_key(|s| (s.tenant, s.id));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let upsert = tx.prepare_cached(UPSERT).await.map_err(db_error)?;
        let mut outcome = SaveOutcome::default();
        for state in &states {
            let row = Columns::of(state);
            let written = tx
                .execute(
                    &upsert,
                    &[
                        &state.tenant,
                        &state.id,
                        &state.meta.parent,
                        &state.meta.flow,
                        &state.meta.flow_version,
                        &state.meta.current_map_element,
                        &state.meta.current_user,
                        &state.meta.is_done,
                        &row.created_text,
                        &row.created,
                        &state.meta.updated_at.as_str(),
                        &state.meta.updated_at.instant(),
                        &row.updated.0,
                        &row.updated.1,
                        &row.expires_text,
                        &row.expires,
                        &row.expires_split.map(|(s, _)| s),
                        &row.expires_split.map(|(_, n)| n),
                        &state.content.as_bytes(),
                    ],
                )
                .await
                .map_err(db_error)?;
            if written == 0 {
                outcome.ignored += 1;
            } else {
                outcome.applied += 1;
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(outcome)
    }

    async fn get_now(
        &self,
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<State>, StoreError> {
        let client = self.client().await?;
        let (seconds, nanos) = split(now);
        let sql =
            format!("SELECT {COLUMNS} FROM flow_store_states WHERE tenant = $1 AND id = $2 AND {NOT_EXPIRED}");
        let statement = client.prepare_cached(&sql).await.map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&tenant, &id, &seconds, &nanos])
            .await
            .map_err(db_error)?;
        row.map(|row| state_from_row(&row)).transpose()
    }

    async fn delete_all_now(&self, tenant: Uuid, ids: Vec<Uuid>) -> Result<usize, StoreError> {
        let client = self.client().await?;
        // One statement: atomic, and committed when it returns.
        let deleted = client
            .execute(
                "DELETE FROM flow_store_states WHERE tenant = $1 AND id = ANY($2)",
                &[&tenant, &ids],
            )
            .await
            .map_err(db_error)?;
        Ok(deleted as usize)
    }

    async fn purge_batch(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let (seconds, nanos) = split(now);
        // SKIP LOCKED: rows another node's sweeper is deleting, or a save
        // is rewriting (perhaps with a later expiry), are left alone.
        let deleted = client
            .execute(
                "DELETE FROM flow_store_states WHERE (tenant, id) IN ( \
                   SELECT tenant, id FROM flow_store_states \
                   WHERE expires_seconds IS NOT NULL \
                     AND (expires_seconds, expires_nanos) <= ($1, $2) \
                   LIMIT $3 FOR UPDATE SKIP LOCKED)",
                &[&seconds, &nanos, &PURGE_BATCH],
            )
            .await
            .map_err(db_error)?;
        Ok(deleted as usize)
    }

    async fn scan_now(
        &self,
        after: Option<(Uuid, Uuid)>,
        limit: usize,
    ) -> Result<Vec<State>, StoreError> {
        let client = self.client().await?;
        page_after(&client, after, i64::try_from(limit).unwrap_or(i64::MAX)).await
    }

    /// Opens a REPEATABLE READ, READ ONLY transaction on a connection of its
    /// own and reads the first page in it, which fixes the snapshot every
    /// later page reads: PostgreSQL's MVCC makes the cut, so no writer
    /// waits. Returns once that first page is read; a task streams the rest.
    async fn snapshot_now(&self, permit: OwnedSemaphorePermit) -> Result<Snapshot, StoreError> {
        let client = self.client().await?;
        let (sender, snapshot) = Snapshot::channel(Duration::ZERO);
        let (cut, cut_made) = oneshot::channel();
        tokio::spawn(stream_snapshot(client, self.timeout, sender, cut, permit));
        match cut_made.await {
            Ok(Ok(())) => Ok(snapshot),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Unavailable(
                "the snapshot task ended before it began".into(),
            )),
        }
    }

    async fn health_check_now(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        // A committed write, not just `SELECT 1`: a standby that became
        // read-only, or a primary that cannot flush its WAL, fails it.
        client
            .execute(
                "INSERT INTO flow_store_health (probe, checked_at) VALUES (1, now()) \
                 ON CONFLICT (probe) DO UPDATE SET checked_at = EXCLUDED.checked_at",
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn stats_now(&self) -> Result<StoreStats, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), pg_total_relation_size('flow_store_states') FROM flow_store_states",
                &[],
            )
            .await
            .map_err(db_error)?;
        let (states, bytes): (i64, i64) = (row.get(0), row.get(1));
        Ok(StoreStats {
            states: u64::try_from(states).unwrap_or_default(),
            bytes_on_disk: u64::try_from(bytes).unwrap_or_default(),
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn save_all(&self, states: Vec<State>) -> Result<SaveOutcome, StoreError> {
        self.bounded(self.save_all_now(states)).await
    }

    async fn get(
        &self,
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<State>, StoreError> {
        self.bounded(self.get_now(tenant, id, now)).await
    }

    async fn delete_all(&self, tenant: Uuid, ids: Vec<Uuid>) -> Result<usize, StoreError> {
        self.bounded(self.delete_all_now(tenant, ids)).await
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.bounded(self.purge_batch(now)).await?;
            total += deleted;
            if deleted < PURGE_BATCH as usize {
                return Ok(total);
            }
        }
    }

    async fn health_check(&self, _now: OffsetDateTime) -> Result<(), StoreError> {
        self.bounded(self.health_check_now()).await
    }

    async fn scan(
        &self,
        after: Option<(Uuid, Uuid)>,
        limit: usize,
    ) -> Result<Vec<State>, StoreError> {
        self.bounded(self.scan_now(after, limit)).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.bounded(self.stats_now()).await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let permit = Arc::clone(&self.snapshots)
            .try_acquire_owned()
            .map_err(|_| StoreError::BackupRunning)?;
        self.bounded(self.snapshot_now(permit)).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every write was committed before it returned: nothing to flush.
        self.pool.close();
        Ok(())
    }
}

/// States per page of a snapshot.
const SNAPSHOT_PAGE: i64 = 500;

/// Streams every state of one REPEATABLE READ transaction in key order
/// into `sender`, telling `cut` once the first page (which fixes the
/// snapshot) is read. Holds `_permit` until done. On any failure the
/// connection leaves the pool instead of going back inside a transaction.
async fn stream_snapshot(
    client: Object,
    timeout: Duration,
    sender: mpsc::Sender<Result<State, StoreError>>,
    cut: oneshot::Sender<Result<(), StoreError>>,
    _permit: OwnedSemaphorePermit,
) {
    let begin = within(timeout, async {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_error)
    });
    let mut after = None;
    let first = match begin.await {
        Ok(()) => within(timeout, page_after(&client, after, SNAPSHOT_PAGE)).await,
        Err(e) => Err(e),
    };
    let mut page = match first {
        Ok(page) => {
            let _ = cut.send(Ok(()));
            page
        }
        Err(e) => {
            let _ = cut.send(Err(e));
            let _ = Object::take(client);
            return;
        }
    };
    loop {
        let full = page.len() as i64 == SNAPSHOT_PAGE;
        after = page.last().map(|s| (s.tenant, s.id));
        for state in page {
            if sender.send(Ok(state)).await.is_err() {
                // The reader stopped: nothing more to do.
                let _ = Object::take(client);
                return;
            }
        }
        if !full {
            break;
        }
        page = match within(timeout, page_after(&client, after, SNAPSHOT_PAGE)).await {
            Ok(page) => page,
            Err(e) => {
                let _ = sender.send(Err(e)).await;
                let _ = Object::take(client);
                return;
            }
        };
    }
    if client.batch_execute("ROLLBACK").await.is_err() {
        let _ = Object::take(client);
    }
}

/// Up to `limit` states in key order after `after` (from the first when
/// `None`), in whatever transaction `client` has open. Keyset pages on the
/// primary key: each page is an index range, however far a copy has gone.
async fn page_after(
    client: &Object,
    after: Option<(Uuid, Uuid)>,
    limit: i64,
) -> Result<Vec<State>, StoreError> {
    let rows = match after {
        Some((tenant, id)) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM flow_store_states WHERE (tenant, id) > ($1, $2) \
                 ORDER BY tenant, id LIMIT $3"
            );
            client.query(&sql, &[&tenant, &id, &limit]).await
        }
        None => {
            let sql =
                format!("SELECT {COLUMNS} FROM flow_store_states ORDER BY tenant, id LIMIT $1");
            client.query(&sql, &[&limit]).await
        }
    }
    .map_err(db_error)?;
    rows.iter().map(state_from_row).collect()
}

/// A connection from `pool`.
pub(crate) async fn checkout(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| match e {
        // What the server said (wrong password, no such database…).
        PoolError::Backend(e) => db_error(e),
        other => StoreError::Unavailable(format!("cannot get a PostgreSQL connection: {other}")),
    })
}

/// Runs `work` within `timeout`. A write whose COMMIT was sent but not
/// answered in time is reported as a failure: its outcome is unknown, and
/// the `updatedAt` rule makes the platform's retry harmless either way.
pub(crate) async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {timeout:?} \
                 (storage.postgres.statement_timeout_seconds)"
            )))
        })
}

/// The derived columns of a state: instants for people and split for
/// ordering.
struct Columns<'a> {
    created_text: Option<&'a str>,
    created: Option<OffsetDateTime>,
    updated: (i64, i32),
    expires_text: Option<&'a str>,
    expires: Option<OffsetDateTime>,
    expires_split: Option<(i64, i32)>,
}

impl<'a> Columns<'a> {
    fn of(state: &'a State) -> Columns<'a> {
        let meta = &state.meta;
        Columns {
            created_text: meta.created_at.as_ref().map(Timestamp::as_str),
            created: meta.created_at.as_ref().map(Timestamp::instant),
            updated: split(meta.updated_at.instant()),
            expires_text: meta.expires_at.as_ref().map(Timestamp::as_str),
            expires: meta.expires_at.as_ref().map(Timestamp::instant),
            expires_split: meta.expires_at.as_ref().map(|t| split(t.instant())),
        }
    }
}

/// An instant as (seconds since the epoch, nanoseconds within the second):
/// ordered like the instant, at full precision, for any year.
fn split(instant: OffsetDateTime) -> (i64, i32) {
    // nanosecond() is below 1e9, within i32.
    (instant.unix_timestamp(), instant.nanosecond() as i32)
}

/// A row of [`COLUMNS`] as a state.
fn state_from_row(row: &Row) -> Result<State, StoreError> {
    let timestamp = |text: Option<String>, column: &str| {
        text.map(|t| {
            Timestamp::parse(&t)
                .map_err(|_| StoreError::Corrupt(format!("{column} holds an unreadable timestamp")))
        })
        .transpose()
    };
    let content: Vec<u8> = row.try_get("content").map_err(db_error)?;
    let content = String::from_utf8(content)
        .map_err(|_| StoreError::Corrupt("a stored content is not UTF-8".into()))?;
    let updated: String = row.try_get("updated_at_text").map_err(db_error)?;
    Ok(State {
        tenant: row.try_get("tenant").map_err(db_error)?,
        id: row.try_get("id").map_err(db_error)?,
        meta: StateMeta {
            parent: row.try_get("parent").map_err(db_error)?,
            flow: row.try_get("flow").map_err(db_error)?,
            flow_version: row.try_get("flow_version").map_err(db_error)?,
            current_map_element: row.try_get("current_map_element").map_err(db_error)?,
            current_user: row.try_get("current_user_id").map_err(db_error)?,
            is_done: row.try_get("is_done").map_err(db_error)?,
            created_at: timestamp(
                row.try_get("created_at_text").map_err(db_error)?,
                "created_at_text",
            )?,
            updated_at: timestamp(Some(updated), "updated_at_text")?
                .ok_or_else(|| StoreError::Corrupt("updated_at_text is empty".into()))?,
            expires_at: timestamp(
                row.try_get("expires_at_text").map_err(db_error)?,
                "expires_at_text",
            )?,
        },
        content,
    })
}

/// A PostgreSQL failure as the store reports it: what the server said, or
/// why it could not be reached. Never a parameter value (no content).
pub(crate) fn db_error(error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => StoreError::Unavailable(format!(
            "PostgreSQL refused the request: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => {
            // tokio-postgres keeps the reason (refused, TLS certificate,
            // timeout…) in the source chain, not in its own message.
            let mut message = format!("PostgreSQL connection failed: {error}");
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                message.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            StoreError::Unavailable(message)
        }
    }
}
