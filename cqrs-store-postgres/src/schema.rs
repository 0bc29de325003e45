//! The store's tables, in a schema of the user's choosing, created and upgraded by versioned
//! migrations that several processes may run at once.

use cqrs_core::StoreError;
use sqlx::{AssertSqlSafe, PgPool};

use crate::error::backend;

/// The schema version this build writes and understands.
pub(crate) const CURRENT_VERSION: i32 = 1;

/// Migrations in order; migration `i` moves the schema from version `i` to `i + 1`. `{s}` is
/// the schema name.
const MIGRATIONS: &[&str] = &[
    // 1: the event log, the message log of commands, snapshots, checkpoints, the schedule
    // (timeouts and outboxes) and process-manager state.
    r"
    -- `position` is (the writing transaction's id << 16) | (the event's index in that
    -- transaction): readers deliver only positions below the oldest transaction still running,
    -- which no later commit can go under (see docs/design.md, gap safety).
    CREATE TABLE {s}.events (
        position       bigint PRIMARY KEY,
        stream         text NOT NULL,
        category       text NOT NULL,
        version        bigint NOT NULL,
        event_type     text NOT NULL,
        schema_version integer NOT NULL,
        payload        json NOT NULL,
        event_id       uuid NOT NULL,
        correlation_id uuid,
        causation_id   uuid,
        command_id     uuid,
        recorded_at    timestamptz NOT NULL,
        headers        json,
        CONSTRAINT events_stream_version UNIQUE (stream, version)
    );

    CREATE TABLE {s}.commands (
        sequence       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        command_id     uuid NOT NULL CONSTRAINT commands_command_id UNIQUE,
        command_type   text NOT NULL,
        target         text NOT NULL,
        payload        json NOT NULL,
        correlation_id uuid,
        causation_id   uuid,
        recorded_at    timestamptz NOT NULL,
        headers        json,
        outcome        json NOT NULL
    );

    CREATE TABLE {s}.snapshots (
        stream         text NOT NULL,
        schema_version integer NOT NULL,
        version        bigint NOT NULL,
        state          json NOT NULL,
        taken_at       timestamptz NOT NULL,
        PRIMARY KEY (stream, schema_version)
    );

    CREATE TABLE {s}.checkpoints (
        name     text PRIMARY KEY,
        position bigint NOT NULL
    );

    -- `available_at` is the due time, or the end of the current claim's lease.
    CREATE TABLE {s}.scheduled (
        id             uuid PRIMARY KEY,
        target         text NOT NULL,
        command_type   text NOT NULL,
        payload        json NOT NULL,
        correlation_id uuid,
        causation_id   uuid,
        headers        json,
        due_at         timestamptz NOT NULL,
        available_at   timestamptz NOT NULL,
        attempts       integer NOT NULL DEFAULT 0
    );
    CREATE INDEX scheduled_available ON {s}.scheduled (available_at);

    CREATE TABLE {s}.processes (
        id            text PRIMARY KEY,
        version       bigint NOT NULL,
        state         json NOT NULL,
        completed     boolean NOT NULL,
        last_position bigint NOT NULL,
        updated_at    timestamptz NOT NULL
    );
    ",
];

/// Checks that `schema` is a plain lower-case identifier, safe to put in SQL.
///
/// # Errors
///
/// [`StoreError::Invalid`] otherwise.
pub(crate) fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let valid = schema.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "schema name {schema:?} must be a lower-case SQL identifier"
        )))
    }
}

/// Creates the schema, or upgrades it to [`CURRENT_VERSION`], in one transaction under an
/// advisory lock, so that processes starting together migrate once.
///
/// # Errors
///
/// [`StoreError::SchemaTooNew`] if a newer build wrote the schema, or the backend error.
pub(crate) async fn migrate(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("cqrs-migrate:{schema}"))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    // The schema name was checked to be a plain identifier (`check_schema_name`).
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.cqrs_schema (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )"
    )))
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    let found: i32 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT coalesce(max(version), 0) FROM {schema}.cqrs_schema"
    )))
    .fetch_one(&mut *tx)
    .await
    .map_err(backend)?;
    if found > CURRENT_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: u32::try_from(CURRENT_VERSION).unwrap_or(0),
        });
    }
    for (i, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        sqlx::raw_sql(AssertSqlSafe(migration.replace("{s}", schema)))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let version = i32::try_from(i + 1).map_err(backend)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {schema}.cqrs_schema (version) VALUES ($1)"
        )))
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tracing::info!(schema, version, "postgres store schema migrated");
    }
    tx.commit().await.map_err(backend)
}
