//! The store's tables, created and upgraded by versioned migrations recorded in the file.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::backend;
use cqrs_core::StoreError;

/// The schema version this build writes and understands.
pub(crate) const CURRENT_VERSION: u32 = 5;

/// Migrations in order; migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the event log, the message log of commands, snapshots, checkpoints, the
    // schedule (timeouts and outboxes) and process-manager state.
    r"
    -- `position` is the rowid: the single writer hands positions out in commit order, densely.
    -- A commit touches as few B-tree pages as a hand-written table would: the rows and the
    -- (stream, version) index that both finds a stream and guards its versions.
    CREATE TABLE cqrs_events (
        position       INTEGER PRIMARY KEY,
        stream         TEXT NOT NULL,
        category       TEXT NOT NULL,
        version        INTEGER NOT NULL,
        event_type     TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        payload        TEXT NOT NULL,
        event_id       BLOB NOT NULL,
        correlation_id BLOB,
        causation_id   BLOB,
        command_id     BLOB,
        recorded_at    INTEGER NOT NULL,
        headers        TEXT,
        UNIQUE (stream, version)
    );

    CREATE TABLE cqrs_commands (
        sequence       INTEGER PRIMARY KEY,
        command_id     BLOB NOT NULL UNIQUE,
        command_type   TEXT NOT NULL,
        target         TEXT NOT NULL,
        payload        TEXT NOT NULL,
        correlation_id BLOB,
        causation_id   BLOB,
        recorded_at    INTEGER NOT NULL,
        headers        TEXT,
        outcome        TEXT NOT NULL
    );

    CREATE TABLE cqrs_snapshots (
        stream         TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        version        INTEGER NOT NULL,
        state          TEXT NOT NULL,
        taken_at       INTEGER NOT NULL,
        PRIMARY KEY (stream, schema_version)
    );

    CREATE TABLE cqrs_checkpoints (
        name     TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    );

    -- `available_at` is the due time, or the end of the current claim's lease.
    CREATE TABLE cqrs_scheduled (
        id             BLOB PRIMARY KEY,
        target         TEXT NOT NULL,
        command_type   TEXT NOT NULL,
        payload        TEXT NOT NULL,
        correlation_id BLOB,
        causation_id   BLOB,
        headers        TEXT,
        due_at         INTEGER NOT NULL,
        available_at   INTEGER NOT NULL,
        attempts       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX cqrs_scheduled_available ON cqrs_scheduled (available_at);

    CREATE TABLE cqrs_processes (
        id            TEXT PRIMARY KEY,
        version       INTEGER NOT NULL,
        state         TEXT NOT NULL,
        completed     INTEGER NOT NULL,
        last_position INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    ",
    // 2: which version of each durable read model readers see (the others are being built or
    // are being dropped).
    r"
    CREATE TABLE cqrs_read_models (
        name         TEXT PRIMARY KEY,
        live_version INTEGER NOT NULL
    );
    ",
    // 3: tags on events (a JSON array of strings, NULL for none) and their index, which
    // reads one tag's events in position order without scanning the log.
    r"
    ALTER TABLE cqrs_events ADD COLUMN tags TEXT;
    CREATE TABLE cqrs_event_tags (
        tag      TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (tag, position)
    ) WITHOUT ROWID;
    ",
    // 4: dead letters: a scheduled command the dispatcher gave up on is parked where it is,
    // with when and why, and its `available_at` set to the end of year 9999, past every claim
    // (the claim index then never visits it).
    r"
    ALTER TABLE cqrs_scheduled ADD COLUMN parked_at INTEGER;
    ALTER TABLE cqrs_scheduled ADD COLUMN parked_reason TEXT;
    ",
    // 5: the record of a command that wrote events is kept in the row of its first event
    // (`command_type` not NULL marks it; the id is the row's `command_id`, the target its
    // stream, NULL `command_headers` the event's own), so a command's commit writes one table
    // and its index fewer: a page less in the log per commit. Records of commands that wrote
    // nothing stay in `cqrs_commands`, as do those written before this version.
    r"
    ALTER TABLE cqrs_events ADD COLUMN command_type TEXT;
    ALTER TABLE cqrs_events ADD COLUMN command_payload TEXT;
    ALTER TABLE cqrs_events ADD COLUMN command_correlation BLOB;
    ALTER TABLE cqrs_events ADD COLUMN command_causation BLOB;
    ALTER TABLE cqrs_events ADD COLUMN command_recorded_at INTEGER;
    ALTER TABLE cqrs_events ADD COLUMN command_headers TEXT;
    ALTER TABLE cqrs_events ADD COLUMN command_outcome TEXT;
    CREATE UNIQUE INDEX cqrs_events_command ON cqrs_events (command_id)
        WHERE command_type IS NOT NULL;
    ",
];

/// Creates the message log's indexes by correlation id if they are missing: an option of the
/// store (`SqliteOptions::with_correlation_index`), not a migration, as it costs every append.
///
/// # Errors
///
/// The backend error.
pub(crate) fn correlation_index(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS cqrs_events_correlation ON cqrs_events (correlation_id);
         CREATE INDEX IF NOT EXISTS cqrs_commands_correlation ON cqrs_commands (correlation_id);
         CREATE INDEX IF NOT EXISTS cqrs_events_command_correlation
             ON cqrs_events (command_correlation) WHERE command_type IS NOT NULL;",
    )
    .map_err(backend)
}

/// Creates the schema, or upgrades it to [`CURRENT_VERSION`], in one transaction.
///
/// # Errors
///
/// [`StoreError::SchemaTooNew`] if the file was written by a newer build, or the backend error.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS cqrs_schema (
             version    INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         );",
    )
    .map_err(backend)?;
    let found: u32 = tx
        .query_row("SELECT max(version) FROM cqrs_schema", [], |row| {
            row.get::<_, Option<u32>>(0)
        })
        .optional()
        .map_err(backend)?
        .flatten()
        .unwrap_or(0);
    if found > CURRENT_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: CURRENT_VERSION,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(migration).map_err(backend)?;
        let version = u32::try_from(i + 1).map_err(backend)?;
        tx.execute(
            "INSERT INTO cqrs_schema (version) VALUES (?1)",
            params![version],
        )
        .map_err(backend)?;
        tracing::info!(version, "sqlite store schema migrated");
    }
    tx.commit().map_err(backend)
}
