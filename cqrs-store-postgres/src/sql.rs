//! The store's SQL, with the schema name put in once when the store opens.

use std::sync::Arc;

/// The columns of an event row, in the order [`crate::rows::EventRows`] reads them.
const EVENT_COLUMNS: &str = "position, stream, version, event_type, schema_version, payload::text, event_id, \
     correlation_id, causation_id, command_id, recorded_at, headers::text";

/// Positions below this are final: every transaction that could still write one has ended.
const HORIZON: &str = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 16)";

/// Every statement of the store, for one schema. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) commit: Arc<str>,
    pub(crate) stream_version: Arc<str>,
    pub(crate) read_stream: Arc<str>,
    pub(crate) read_all: Arc<str>,
    pub(crate) read_filtered: Arc<str>,
    pub(crate) head: Arc<str>,
    pub(crate) load_snapshot: Arc<str>,
    pub(crate) save_snapshot: Arc<str>,
    pub(crate) load_checkpoint: Arc<str>,
    pub(crate) save_checkpoint: Arc<str>,
    pub(crate) delete_checkpoint: Arc<str>,
    pub(crate) find_command: Arc<str>,
    pub(crate) insert_command: Arc<str>,
    pub(crate) schedule: Arc<str>,
    pub(crate) claim_due: Arc<str>,
    pub(crate) complete_scheduled: Arc<str>,
    pub(crate) next_due: Arc<str>,
    pub(crate) load_process: Arc<str>,
    pub(crate) lock_process: Arc<str>,
    pub(crate) insert_process: Arc<str>,
    pub(crate) update_process: Arc<str>,
    pub(crate) schema: Arc<str>,
}

/// The command-record columns, in the order [`crate::rows::command_record`] reads them.
pub(crate) const COMMAND_COLUMNS: &str = "sequence, command_id, command_type, target, payload::text, correlation_id, \
     causation_id, recorded_at, headers::text, outcome::text";

/// The scheduled-command columns, in the order [`crate::rows::scheduled`] reads them.
pub(crate) const SCHEDULED_COLUMNS: &str = "id, target, command_type, payload::text, correlation_id, causation_id, headers::text, due_at, attempts";

impl Sql {
    /// The statements for `schema` (already checked to be a plain identifier).
    pub(crate) fn new(schema: &str) -> Self {
        let s = schema;
        let q = |sql: String| -> Arc<str> { Arc::from(sql) };
        Self {
            // One statement per append: it checks the command id (a duplicate first), then the
            // expected version, numbers the events after the transaction's earlier ones,
            // inserts them, records the command, and wakes listeners on commit.
            commit: q(format!(
                "WITH cur AS MATERIALIZED (
                     SELECT coalesce(max(version), 0)::bigint AS v FROM {s}.events WHERE stream = $1),
                 dup AS MATERIALIZED (
                     SELECT ($5::uuid IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.commands WHERE command_id = $5::uuid)) AS d),
                 xid AS MATERIALIZED (SELECT pg_current_xact_id()::text::bigint AS x),
                 base AS MATERIALIZED (
                     SELECT coalesce(max(position) - ((SELECT x FROM xid) << 16), 0)::bigint AS b FROM {s}.events
                     WHERE position >= ((SELECT x FROM xid) << 16) AND position < (((SELECT x FROM xid) + 1) << 16)),
                 go AS MATERIALIZED (
                     SELECT (NOT (SELECT d FROM dup))
                        AND ($2::bigint < 0 OR (SELECT v FROM cur) = $2::bigint)
                        AND (SELECT b FROM base) + cardinality($6::text[]) <= 65535 AS ok),
                 ins AS (
                     INSERT INTO {s}.events (position, stream, category, version, event_type, schema_version, payload,
                         event_id, correlation_id, causation_id, command_id, recorded_at, headers)
                     SELECT ((SELECT x FROM xid) << 16) | ((SELECT b FROM base) + e.ord), $1, $3, (SELECT v FROM cur) + e.ord,
                         e.t, e.sv, e.p::json, e.id, e.co, e.ca, e.cm, e.at, e.h::json
                     FROM unnest($6::text[], $7::int[], $8::text[], $9::uuid[], $10::uuid[], $11::uuid[], $12::uuid[],
                                 $13::timestamptz[], $14::text[]) WITH ORDINALITY AS e(t, sv, p, id, co, ca, cm, at, h, ord)
                     WHERE (SELECT ok FROM go)
                     RETURNING position, version),
                 cmd AS (
                     INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id, causation_id,
                         recorded_at, headers, outcome)
                     SELECT $5::uuid, $15::text, $1, $16::text::json, $17::uuid, $18::uuid, $19::timestamptz,
                         $20::text::json, $21::text::json
                     WHERE $5::uuid IS NOT NULL AND (SELECT ok FROM go)
                     RETURNING 1),
                 note AS (SELECT pg_notify($4, '') FROM (SELECT 1 FROM ins LIMIT 1) AS appended)
                 SELECT (SELECT d FROM dup), (SELECT ok FROM go), (SELECT v FROM cur), (SELECT b FROM base),
                        (SELECT max(position) FROM ins), (SELECT max(version) FROM ins),
                        (SELECT count(*) FROM cmd), (SELECT count(*) FROM note)"
            )),
            stream_version: q(format!("SELECT coalesce(max(version), 0)::bigint FROM {s}.events WHERE stream = $1")),
            read_stream: q(format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE stream = $1 AND version >= $2 ORDER BY version"
            )),
            read_all: q(format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE position >= $1 AND position < {HORIZON} \
                 ORDER BY position LIMIT $2"
            )),
            // The final head (the last position below the horizon) comes with every batch, so
            // a reader that found nothing new knows how far the log is final.
            read_filtered: q(format!(
                "WITH h AS MATERIALIZED (SELECT {HORIZON} AS horizon),
                      m AS MATERIALIZED (SELECT coalesce(max(position), 0)::bigint AS head FROM {s}.events
                                         WHERE position < (SELECT horizon FROM h))
                 SELECT m.head, e.* FROM m LEFT JOIN LATERAL (
                     SELECT {EVENT_COLUMNS} FROM {s}.events
                     WHERE position >= $1 AND position <= m.head
                       AND ($3 OR event_type = ANY($4::text[]) OR category = ANY($5::text[]))
                     ORDER BY position LIMIT $2) e ON true"
            )),
            head: q(format!("SELECT coalesce(max(position), 0)::bigint FROM {s}.events WHERE position < {HORIZON}")),
            load_snapshot: q(format!(
                "SELECT version, state::text, taken_at FROM {s}.snapshots WHERE stream = $1 AND schema_version = $2"
            )),
            save_snapshot: q(format!(
                "INSERT INTO {s}.snapshots (stream, schema_version, version, state, taken_at) VALUES ($1, $2, $3, $4::json, $5)
                 ON CONFLICT (stream, schema_version) DO UPDATE
                 SET version = excluded.version, state = excluded.state, taken_at = excluded.taken_at
                 WHERE excluded.version >= {s}.snapshots.version"
            )),
            load_checkpoint: q(format!("SELECT position FROM {s}.checkpoints WHERE name = $1")),
            save_checkpoint: q(format!(
                "INSERT INTO {s}.checkpoints (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position"
            )),
            delete_checkpoint: q(format!("DELETE FROM {s}.checkpoints WHERE name = $1")),
            find_command: q(format!("SELECT {COMMAND_COLUMNS} FROM {s}.commands WHERE command_id = $1")),
            insert_command: q(format!(
                "INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id, causation_id,
                     recorded_at, headers, outcome)
                 VALUES ($1, $2, $3, $4::json, $5, $6, $7, $8::json, $9::json)"
            )),
            schedule: q(format!(
                "INSERT INTO {s}.scheduled (id, target, command_type, payload, correlation_id, causation_id, headers,
                     due_at, available_at)
                 SELECT d.id, d.target, d.t, d.p::json, d.co, d.ca, d.h::json, d.due, d.due
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::text[],
                     $8::timestamptz[]) AS d(id, target, t, p, co, ca, h, due)
                 ON CONFLICT (id) DO NOTHING"
            )),
            // SKIP LOCKED: dispatchers in several processes claim disjoint commands.
            claim_due: q(format!(
                "UPDATE {s}.scheduled SET available_at = $3, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM {s}.scheduled WHERE available_at <= $1
                              ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING {SCHEDULED_COLUMNS}"
            )),
            complete_scheduled: q(format!("DELETE FROM {s}.scheduled WHERE id = ANY($1)")),
            next_due: q(format!("SELECT min(available_at) FROM {s}.scheduled")),
            load_process: q(format!(
                "SELECT version, state::text, completed, last_position, updated_at FROM {s}.processes WHERE id = $1"
            )),
            lock_process: q(format!("SELECT version FROM {s}.processes WHERE id = $1 FOR UPDATE")),
            insert_process: q(format!(
                "INSERT INTO {s}.processes (id, version, state, completed, last_position, updated_at)
                 VALUES ($1, 1, $2::json, $3, $4, $5)"
            )),
            update_process: q(format!(
                "UPDATE {s}.processes SET version = version + 1, state = $2::json, completed = $3, last_position = $4,
                     updated_at = $5
                 WHERE id = $1"
            )),
            schema: Arc::from(schema),
        }
    }
}
