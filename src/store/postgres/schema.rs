//! The engine's tables and their versioned, embedded migrations.
//!
//! Every table is named `flow_store_*`: the engine never touches another
//! application's tables (in particular not the `states` table of Boomi's
//! reference store, which may share the database during a move).
//!
//! [`migrate`] runs at start in one transaction holding a transaction-level
//! advisory lock, so nodes starting at once apply each migration exactly
//! once and a crash mid-way leaves the schema as it was. A database whose
//! schema is newer than this release knows is refused.

use tokio_postgres::Client;

use crate::store::StoreError;

/// Key of the advisory lock that serialises migrations ("flow-sto" in
/// ASCII): one number no other application is likely to use.
const MIGRATION_LOCK: i64 = 0x666c_6f77_2d73_746f;

/// Migrations in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: states keyed by (tenant, id), with full-precision instants.
    "CREATE TABLE flow_store_states (
        tenant uuid NOT NULL,
        id uuid NOT NULL,
        parent uuid,
        flow uuid,
        flow_version uuid,
        current_map_element uuid,
        current_user_id uuid,
        is_done boolean NOT NULL,
        -- Timestamps as the platform wrote them (returned as given), their
        -- instant for people (timestamptz: microseconds), and the instant
        -- at full precision (seconds and nanoseconds since the epoch) for
        -- the updatedAt rule and expiry, which must not round.
        created_at_text text,
        created_at timestamptz,
        updated_at_text text NOT NULL,
        updated_at timestamptz NOT NULL,
        updated_seconds bigint NOT NULL,
        updated_nanos integer NOT NULL,
        expires_at_text text,
        expires_at timestamptz,
        expires_seconds bigint,
        expires_nanos integer,
        -- bytea, byte for byte: text cannot hold NUL, jsonb reorders keys.
        content bytea NOT NULL,
        PRIMARY KEY (tenant, id)
    );
    CREATE INDEX flow_store_states_expiry ON flow_store_states (expires_seconds, expires_nanos)
        WHERE expires_seconds IS NOT NULL;
    -- One row, rewritten by every node's health check: a committed write.
    CREATE TABLE flow_store_health (
        probe smallint PRIMARY KEY,
        checked_at timestamptz NOT NULL
    );",
];

/// The schema version this release writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS flow_store_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Brings the schema to [`SCHEMA_VERSION`]; returns the version found.
pub async fn migrate(client: &mut Client) -> Result<u32, StoreError> {
    let tx = client.transaction().await.map_err(super::db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(super::db_error)?;
    tx.batch_execute(VERSION_TABLE)
        .await
        .map_err(super::db_error)?;
    let found = applied_version(&tx).await?;
    refuse_newer(found)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i32 + 1;
        tx.batch_execute(sql).await.map_err(super::db_error)?;
        tx.execute(
            "INSERT INTO flow_store_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(super::db_error)?;
        log::info!("PostgreSQL schema migrated to version {version}");
    }
    tx.commit().await.map_err(super::db_error)?;
    Ok(found)
}

/// The schema version of the database, without changing anything: 0 when
/// flow-store never ran on it.
pub async fn version(client: &Client) -> Result<u32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('flow_store_schema') IS NOT NULL", &[])
        .await
        .map_err(super::db_error)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    applied_version(client).await
}

/// Refuses a schema newer than this release knows.
pub fn refuse_newer(found: u32) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedFormat {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

async fn applied_version(client: &impl tokio_postgres::GenericClient) -> Result<u32, StoreError> {
    let version: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM flow_store_schema",
            &[],
        )
        .await
        .map_err(super::db_error)?
        .get(0);
    u32::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("flow_store_schema holds version {version}")))
}
