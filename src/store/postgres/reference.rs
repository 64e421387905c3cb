//! Read-only access to the `states` table of Boomi's Java reference store
//! (`manywho/external-storage`, Flyway migrations V0001–V0003), so that
//! `flow-store migrate` can move a deployment off it in one command.
//!
//! Every read runs in a READ ONLY transaction: this module cannot change
//! the reference's data, and the platform can be pointed back at it.
//! What cannot be recovered from it: the content was stored as `jsonb`,
//! which re-serialises it (key order, whitespace), and timestamps were kept
//! to the microsecond; both come back as PostgreSQL renders them.

use std::time::Duration;

use deadpool_postgres::Pool;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{checkout, connect, db_error, within, PostgresOptions};
use crate::model::{State, StateMeta, Timestamp};
use crate::store::StoreError;

const COLUMNS: &str = "id, tenant_id, parent_id, flow_id, flow_version_id, is_done, \
     current_map_element_id, current_user_id, created_at, updated_at, content::text AS content, \
     expires_at";

/// The reference store's states, read-only.
pub struct ReferenceStates {
    pool: Pool,
    timeout: Duration,
}

impl ReferenceStates {
    /// Connects and checks that the database has a reference `states` table.
    pub async fn open(options: &PostgresOptions) -> Result<ReferenceStates, StoreError> {
        let reference = ReferenceStates {
            pool: connect::pool(options)?,
            timeout: options.statement_timeout,
        };
        let found: bool = reference
            .bounded(async {
                let client = reference.client().await?;
                let row = client
                    .query_one(
                        "SELECT count(*) = 3 FROM information_schema.columns \
                         WHERE table_name = 'states' AND table_schema = current_schema() \
                         AND column_name IN ('tenant_id', 'content', 'expires_at')",
                        &[],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(row.get(0))
            })
            .await?;
        if !found {
            return Err(StoreError::Unavailable(
                "this database has no `states` table of the reference store (with tenant_id, \
                 content and expires_at, as after its migration V0003)"
                    .into(),
            ));
        }
        Ok(reference)
    }

    /// How many states the table holds.
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let count: i64 = client
                .query_one("SELECT count(*) FROM states", &[])
                .await
                .map_err(db_error)?
                .get(0);
            Ok(u64::try_from(count).unwrap_or_default())
        })
        .await
    }

    /// Up to `limit` states in id order after the state id `after` (the
    /// reference's primary key is the id alone).
    pub async fn scan(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<State>, StoreError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(db_error)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = match after {
                Some(id) => {
                    let sql =
                        format!("SELECT {COLUMNS} FROM states WHERE id > $1 ORDER BY id LIMIT $2");
                    tx.query(&sql, &[&id, &limit]).await
                }
                None => {
                    let sql = format!("SELECT {COLUMNS} FROM states ORDER BY id LIMIT $1");
                    tx.query(&sql, &[&limit]).await
                }
            }
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            rows.iter().map(reference_state).collect()
        })
        .await
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        checkout(&self.pool).await
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.timeout, work).await
    }
}

/// A reference row as a state; its instants written as RFC 3339.
fn reference_state(row: &Row) -> Result<State, StoreError> {
    let get_time = |column: &str| -> Result<Option<Timestamp>, StoreError> {
        let instant: Option<OffsetDateTime> = row.try_get(column).map_err(db_error)?;
        instant
            .map(|instant| {
                let text = instant.format(&Rfc3339).map_err(|_| {
                    StoreError::Corrupt(format!("{column} cannot be written as RFC 3339"))
                })?;
                Timestamp::parse(&text).map_err(|_| {
                    StoreError::Corrupt(format!("{column} cannot be read back as RFC 3339"))
                })
            })
            .transpose()
    };
    let updated_at = get_time("updated_at")?
        .ok_or_else(|| StoreError::Corrupt("a reference state has no updated_at".into()))?;
    Ok(State {
        tenant: row.try_get("tenant_id").map_err(db_error)?,
        id: row.try_get("id").map_err(db_error)?,
        meta: StateMeta {
            parent: row.try_get("parent_id").map_err(db_error)?,
            flow: row.try_get("flow_id").map_err(db_error)?,
            flow_version: row.try_get("flow_version_id").map_err(db_error)?,
            current_map_element: row.try_get("current_map_element_id").map_err(db_error)?,
            current_user: row.try_get("current_user_id").map_err(db_error)?,
            is_done: row.try_get("is_done").map_err(db_error)?,
            created_at: get_time("created_at")?,
            updated_at,
            expires_at: get_time("expires_at")?,
        },
        content: row.try_get("content").map_err(db_error)?,
    })
}
