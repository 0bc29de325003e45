//! The raw PostgreSQL baseline of DESIGN.md §5: a minimal hand-written event store on sqlx,
//! with no framework: one row per event (global position, stream, version, type, payload,
//! metadata, recorded-at; `UNIQUE (stream, version)`), a single-event append in one autocommit
//! `INSERT`, a load in one indexed `SELECT`, each payload decoded and folded.

use sqlx::{PgPool, Row};

use crate::{Account, AccountCommand, AccountEvent, RawConflict, RawEvent};
use cqrs_core::Aggregate;

/// Creates the minimal store's table in schema `raw`.
///
/// # Panics
///
/// Panics if PostgreSQL fails: a benchmark cannot go on.
pub async fn create(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS raw;
         CREATE TABLE IF NOT EXISTS raw.events (
             position bigserial PRIMARY KEY, stream text NOT NULL, version bigint NOT NULL,
             event_type text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
             recorded_at timestamptz NOT NULL DEFAULT now(), UNIQUE (stream, version));",
    )
    .execute(pool)
    .await
    .expect("raw tables");
}

/// Appends `events` to `stream` if it is at `expected`: one autocommit `INSERT` (one row per
/// event). Returns the new version.
///
/// # Errors
///
/// [`RawConflict`] if the stream is past `expected`.
///
/// # Panics
///
/// Panics if PostgreSQL fails otherwise.
pub async fn append(
    pool: &PgPool,
    stream: &str,
    expected: i64,
    events: &[RawEvent],
) -> Result<i64, RawConflict> {
    let inserted = if let [event] = events {
        sqlx::query(
            "INSERT INTO raw.events (stream, version, event_type, payload, metadata) \
             VALUES ($1, $2, $3, $4::json, $5::json)",
        )
        .bind(stream)
        .bind(expected + 1)
        .bind(event.event_type)
        .bind(&event.payload)
        .bind(&event.metadata)
        .execute(pool)
        .await
    } else {
        let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        let metadata: Vec<&str> = events.iter().map(|e| e.metadata.as_str()).collect();
        sqlx::query(
            "INSERT INTO raw.events (stream, version, event_type, payload, metadata) \
             SELECT $1, $2 + n, t, p::json, m::json \
             FROM unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS e(t, p, m, n)",
        )
        .bind(stream)
        .bind(expected)
        .bind(&types)
        .bind(&payloads)
        .bind(&metadata)
        .execute(pool)
        .await
    };
    match inserted {
        Ok(_) => Ok(expected + i64::try_from(events.len()).expect("small")),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Err(RawConflict),
        Err(e) => panic!("insert: {e}"),
    }
}

/// Copies `rows` (stream, version, event) in one autocommit `INSERT` of many rows, in the
/// order given: what the minimal store does to bulk-load a log.
///
/// # Panics
///
/// Panics if PostgreSQL fails or a version exists.
pub async fn copy(pool: &PgPool, rows: &[(String, i64, RawEvent)]) {
    let streams: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let versions: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.2.event_type).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.2.payload.as_str()).collect();
    let metadata: Vec<&str> = rows.iter().map(|r| r.2.metadata.as_str()).collect();
    sqlx::query(
        "INSERT INTO raw.events (stream, version, event_type, payload, metadata) \
         SELECT s, v, t, p::json, m::json \
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) \
              WITH ORDINALITY AS e(s, v, t, p, m, n) ORDER BY n",
    )
    .bind(&streams)
    .bind(&versions)
    .bind(&types)
    .bind(&payloads)
    .bind(&metadata)
    .execute(pool)
    .await
    .expect("copy");
}

/// Loads account `stream`: its rows in version order, each payload decoded and folded.
/// Returns the state and the stream's version.
///
/// # Panics
///
/// Panics if PostgreSQL fails or the history does not fold.
pub async fn load(pool: &PgPool, stream: &str) -> (Option<Account>, i64) {
    let rows = sqlx::query(
        "SELECT version, event_type, payload::text FROM raw.events WHERE stream = $1 ORDER BY version",
    )
    .bind(stream)
    .fetch_all(pool)
    .await
    .expect("load");
    let (mut state, mut version) = (None, 0);
    for row in &rows {
        version = row.get(0);
        let event: AccountEvent =
            cqrs_core::decode_message(row.get(1), row.get(2)).expect("decode");
        state = Some(Account::apply(state, &event).expect("apply"));
    }
    (state, version)
}

/// Handles `command` for account `stream` the hand-written way: load, decide, append at the
/// loaded version (retried on a conflict). Returns the new version.
///
/// # Panics
///
/// Panics if the account rejects the command or PostgreSQL fails.
pub async fn command(pool: &PgPool, stream: &str, command: &AccountCommand) -> i64 {
    loop {
        let (state, version) = load(pool, stream).await;
        let events = RawEvent::decide(state.as_ref(), command);
        if let Ok(version) = append(pool, stream, version, &events).await {
            return version;
        }
    }
}

/// Appends `count` events to `stream` from version `first` in one statement (to set up
/// reads): version 1 opens the account, the others are deposits.
///
/// # Panics
///
/// Panics if PostgreSQL fails or a version exists.
pub async fn fill(pool: &PgPool, stream: &str, first: i64, count: i64) {
    let opened = RawEvent::new(&AccountEvent::opened());
    let deposit = RawEvent::new(&AccountEvent::deposited(100));
    sqlx::query(
        "INSERT INTO raw.events (stream, version, event_type, payload, metadata)
         SELECT $1, v, CASE WHEN v = 1 THEN $4 ELSE $5 END,
                (CASE WHEN v = 1 THEN $6 ELSE $7 END)::json, $8::json
         FROM generate_series($2::bigint, $2::bigint + $3::bigint - 1) AS v",
    )
    .bind(stream)
    .bind(first)
    .bind(count)
    .bind(opened.event_type)
    .bind(deposit.event_type)
    .bind(&opened.payload)
    .bind(&deposit.payload)
    .bind(&deposit.metadata)
    .execute(pool)
    .await
    .expect("fill");
}

/// Replays the whole log in position order, each row's fields copied out, in pages of 10,000.
/// Returns how many rows it saw.
///
/// # Panics
///
/// Panics if PostgreSQL fails.
pub async fn scan(pool: &PgPool) -> u64 {
    let mut from = 0_i64;
    let mut seen = 0;
    loop {
        let page: Vec<crate::RawLogRow> = sqlx::query(
            "SELECT position, stream, version, event_type, payload::text, metadata::text, recorded_at
             FROM raw.events WHERE position > $1 ORDER BY position LIMIT 10000",
        )
        .bind(from)
        .fetch_all(pool)
        .await
        .expect("scan")
        .iter()
        .map(|row| crate::RawLogRow {
            position: row.get(0),
            stream: row.get(1),
            version: row.get(2),
            event_type: row.get(3),
            payload: row.get(4),
            metadata: row.get(5),
            recorded_at: row.get::<chrono::DateTime<chrono::Utc>, _>(6).timestamp_micros(),
        })
        .collect();
        let Some(last) = page.last() else { return seen };
        from = last.position;
        seen += page.len() as u64;
    }
}
