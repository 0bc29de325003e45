//! The raw PostgreSQL baseline: hand-written sqlx writing and reading the same rows as the
//! store, in tables of the same shape, with no framework.

use sqlx::{PgPool, Row};

/// Creates the raw tables in schema `raw`.
///
/// # Panics
///
/// Panics if PostgreSQL fails: a benchmark cannot go on.
pub async fn create(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS raw;
         CREATE TABLE IF NOT EXISTS raw.events (
             position bigserial PRIMARY KEY, stream text NOT NULL, category text NOT NULL, version bigint NOT NULL,
             event_type text NOT NULL, schema_version integer NOT NULL, payload json NOT NULL, event_id uuid NOT NULL,
             correlation_id uuid, causation_id uuid, command_id uuid, recorded_at timestamptz NOT NULL, headers json,
             UNIQUE (stream, version));
         CREATE TABLE IF NOT EXISTS raw.commands (
             sequence bigserial PRIMARY KEY, command_id uuid NOT NULL UNIQUE, command_type text NOT NULL,
             target text NOT NULL, payload json NOT NULL, correlation_id uuid, causation_id uuid,
             recorded_at timestamptz NOT NULL, headers json, outcome json NOT NULL);",
    )
    .execute(pool)
    .await
    .expect("raw tables");
}

/// Handles a command the hand-written way: one transaction that inserts the stream's next
/// event (its version read in the same statement) and the command's record.
///
/// # Panics
///
/// Panics if PostgreSQL fails.
pub async fn command(pool: &PgPool, stream: &str, payload: &str) {
    let id = uuid::Uuid::now_v7();
    let now = chrono::Utc::now();
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO raw.events (stream, category, version, event_type, schema_version, payload, event_id,
             correlation_id, causation_id, command_id, recorded_at)
         SELECT $1, 'account', coalesce(max(version), 0) + 1, 'account.opened', 1, $2::json, $3, $3, $3, $3, $4
         FROM raw.events WHERE stream = $1",
    )
    .bind(stream)
    .bind(payload)
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await
    .expect("insert event");
    sqlx::query(
        "INSERT INTO raw.commands (command_id, command_type, target, payload, correlation_id, recorded_at, outcome)
         VALUES ($1, 'account.open', $2, '{\"owner\":\"ana\"}', $1, $3, '{\"outcome\":\"accepted\",\"version\":1,\"events\":1}')",
    )
    .bind(id)
    .bind(stream)
    .bind(now)
    .execute(&mut *tx)
    .await
    .expect("insert command");
    tx.commit().await.expect("commit");
}

/// Inserts `count` events of `stream` in one statement (to set up reads).
///
/// # Panics
///
/// Panics if PostgreSQL fails.
pub async fn fill(pool: &PgPool, stream: &str, first_version: i64, count: i64, payload: &str) {
    sqlx::query(
        "INSERT INTO raw.events (stream, category, version, event_type, schema_version, payload, event_id, recorded_at)
         SELECT $1, 'account', v, 'account.deposited', 1, $2::json, gen_random_uuid(), now()
         FROM generate_series($3::bigint, $3::bigint + $4::bigint - 1) AS v",
    )
    .bind(stream)
    .bind(payload)
    .bind(first_version)
    .bind(count)
    .execute(pool)
    .await
    .expect("fill");
}

/// Loads a stream the hand-written way: its rows in order, each payload deserialized and
/// folded.
///
/// # Panics
///
/// Panics if PostgreSQL fails.
pub async fn load(pool: &PgPool, stream: &str) -> (i64, usize) {
    let rows = sqlx::query(
        "SELECT position, version, event_type, schema_version, payload::text, event_id, correlation_id,
             causation_id, command_id, recorded_at, headers::text
         FROM raw.events WHERE stream = $1 ORDER BY version",
    )
    .bind(stream)
    .fetch_all(pool)
    .await
    .expect("load");
    let mut balance = 0;
    for row in &rows {
        let payload: &str = row.get(4);
        if let Ok(crate::AccountEvent::Deposited { amount }) =
            cqrs_core::decode_message("account.deposited", payload)
        {
            balance += amount;
        }
    }
    (balance, rows.len())
}

/// Scans every row in position order, reading every column the store reads, in pages.
///
/// # Panics
///
/// Panics if PostgreSQL fails.
pub async fn scan(pool: &PgPool) -> u64 {
    let mut from = 0_i64;
    let mut seen = 0;
    loop {
        let rows = sqlx::query(
            "SELECT position, stream, version, event_type, schema_version, payload::text, event_id, correlation_id,
                 causation_id, command_id, recorded_at, headers::text
             FROM raw.events WHERE position > $1 ORDER BY position LIMIT 10000",
        )
        .bind(from)
        .fetch_all(pool)
        .await
        .expect("scan");
        let Some(last) = rows.last() else { return seen };
        from = last.get(0);
        for row in &rows {
            let _stream: &str = row.get(1);
            let _payload: &str = row.get(5);
            let _id: uuid::Uuid = row.get(6);
            seen += 1;
        }
    }
}
