//! The store's SQL, with the schema name put in once when the store opens.

use std::sync::Arc;

/// The columns of an event row, in the order [`crate::rows::EventRows`] reads them.
pub(crate) const EVENT_COLUMNS: &str = "position, version, event_type, schema_version, payload::text, stream, event_id, \
     correlation_id, causation_id, command_id, recorded_at, headers::text, tags";

/// The first event columns, up to the payload: what a fold reads ([`crate::rows::fold_columns`]).
/// A fold knows its stream, so its name is not sent back with every row.
const FOLD_COLUMNS: &str = "position, version, event_type, schema_version, payload::text";

/// Positions below this are final: every transaction that could still write one has ended.
pub(crate) const HORIZON: &str = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 16)";

/// The `available_at` of a parked scheduled command: the end of year 9999, not `infinity`,
/// which a build from before dead letters could not decode. Parked rows sort last in the index.
const PARKED: &str = "'9999-12-31 23:59:59.999999+00'";

/// Every statement of the store, for one schema. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    // EventStore (`events.rs`, `batch.rs`).
    pub(crate) commit: Arc<str>,
    pub(crate) commit_alone: Arc<str>,
    /// The statements of [`OneEvent`], indexed by [`OneEvent::index`].
    pub(crate) commit_one: [Arc<str>; 6],
    pub(crate) command_recorded: Arc<str>,
    pub(crate) append_many: Arc<str>,
    pub(crate) append_many_untagged: Arc<str>,
    pub(crate) append_in_order: Arc<str>,
    pub(crate) stream_version: Arc<str>,
    // EventReader (`reads.rs`, `read_batcher.rs`).
    pub(crate) read_stream: Arc<str>,
    pub(crate) read_stream_page: Arc<str>,
    pub(crate) list_streams: Arc<str>,
    pub(crate) visit_stream: Arc<str>,
    pub(crate) read_streams: Arc<str>,
    pub(crate) read_all: Arc<str>,
    pub(crate) read_filtered: Arc<str>,
    pub(crate) head: Arc<str>,
    pub(crate) last_committed: Arc<str>,
    // SnapshotStore and CheckpointStore (`state.rs`).
    pub(crate) load_snapshot: Arc<str>,
    pub(crate) save_snapshot: Arc<str>,
    pub(crate) load_checkpoint: Arc<str>,
    pub(crate) save_checkpoint: Arc<str>,
    pub(crate) delete_checkpoint: Arc<str>,
    // MessageLog (`log.rs`).
    pub(crate) find_command: Arc<str>,
    pub(crate) log_commands: Arc<str>,
    pub(crate) log_events: Arc<str>,
    pub(crate) insert_command: Arc<str>,
    // ScheduleStore (`schedule.rs`).
    pub(crate) schedule: Arc<str>,
    pub(crate) claim_due: Arc<str>,
    pub(crate) complete_scheduled: Arc<str>,
    pub(crate) next_due: Arc<str>,
    pub(crate) list_scheduled: Arc<str>,
    pub(crate) park: Arc<str>,
    pub(crate) list_parked: Arc<str>,
    pub(crate) count_parked: Arc<str>,
    pub(crate) find_parked: Arc<str>,
    pub(crate) retry_parked: Arc<str>,
    // ProcessStore (`process.rs`).
    pub(crate) load_process: Arc<str>,
    pub(crate) list_processes: Arc<str>,
    pub(crate) lock_process: Arc<str>,
    pub(crate) insert_process: Arc<str>,
    pub(crate) update_process: Arc<str>,
    /// The schema's name, for the read-model and migration SQL (`projection.rs`, `schema.rs`).
    pub(crate) schema: Arc<str>,
}

/// The command-record columns, in the order [`crate::rows::command_record`] reads them.
pub(crate) const COMMAND_COLUMNS: &str = "sequence, command_id, command_type, target, payload::text, correlation_id, \
     causation_id, recorded_at, headers::text, outcome::text";

/// The scheduled-command columns, in the order [`crate::rows::scheduled`] reads them.
pub(crate) const SCHEDULED_COLUMNS: &str = "id, target, command_type, payload::text, correlation_id, causation_id, headers::text, due_at, attempts";

/// How a message-log query begins: one snapshot for its two `SELECT`s, so a commit shows whole
/// or not at all. The log shows what is committed; it does not wait for the gap-safety horizon,
/// which orders deliveries by position, while the log is ordered by time.
pub(crate) const LOG_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// A message-log query's criteria over one table: $1 types, $2 streams, $3 correlation ids,
/// $4 since, $5 until, $6..$8 the cursor to continue after (`kind` is the table's place in
/// log order, 0 for commands), $9 (bound but used by the caller) the limit.
fn log_criteria(
    type_column: &str,
    stream_column: &str,
    kind: i32,
    sequence_column: &str,
) -> String {
    format!(
        "(cardinality($1::text[]) = 0 OR {type_column} = ANY($1))
         AND (cardinality($2::text[]) = 0 OR {stream_column} = ANY($2))
         AND (cardinality($3::uuid[]) = 0 OR correlation_id = ANY($3))
         AND ($4::timestamptz IS NULL OR recorded_at >= $4)
         AND ($5::timestamptz IS NULL OR recorded_at < $5)
         AND ($6::timestamptz IS NULL OR (recorded_at, {kind}, {sequence_column}) > ($6, $7::int, $8::bigint))"
    )
}

/// The commonest append, one untagged event in a transaction of its own, as one of six
/// statements that each do no work beyond the minimal store's `INSERT` that their expectation
/// and record do not need (each extra probe measured 1–2 % of a command): for a new stream the
/// unique (stream, version) key alone refuses one that exists (a unique violation, rare: two
/// writers creating one aggregate); for an exact version one index probe refuses a stream
/// short of it and `ON CONFLICT DO NOTHING` one past it (a stale version is common on a busy
/// aggregate, and PostgreSQL would log every violation as an error); the head is read only
/// for `Any`. A command record goes in by the same statement, its id refused by its unique
/// key. Scalars rather than arrays: `$1` stream, `$2` expected version (0 new, -1 any), `$3`
/// category, `$4`–`$12` the event, then `$13` the command id and `$14`–`$20` its record. No
/// row back means the stream was not at the version (or the command was recorded before,
/// which `Appender::commit_one` asks after).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneEvent {
    pub(crate) expected: Expected,
    pub(crate) recorded: bool,
}

/// What a [`OneEvent`] statement checks of the stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expected {
    New,
    Exact,
    Any,
}

impl OneEvent {
    const ALL: [Self; 6] = [
        Self::of(Expected::New, false),
        Self::of(Expected::Exact, false),
        Self::of(Expected::Any, false),
        Self::of(Expected::New, true),
        Self::of(Expected::Exact, true),
        Self::of(Expected::Any, true),
    ];

    pub(crate) const fn of(expected: Expected, recorded: bool) -> Self {
        Self { expected, recorded }
    }

    /// Where this shape's statement is in [`Sql::commit_one`].
    pub(crate) const fn index(self) -> usize {
        self.expected as usize + if self.recorded { 3 } else { 0 }
    }

    fn statement(self, s: &str) -> String {
        let (version, guard) = match self.expected {
            Expected::New => ("$2::bigint + 1".to_owned(), String::new()),
            Expected::Exact => (
                "$2::bigint + 1".to_owned(),
                format!(
                    "WHERE EXISTS (SELECT 1 FROM {s}.events e WHERE e.stream = $1 AND e.version = $2::bigint)
                     ON CONFLICT (stream, version) DO NOTHING"
                ),
            ),
            // `$2` is -1 here, referenced so that every shape binds the same parameters.
            Expected::Any => (
                format!(
                    "coalesce((SELECT e.version FROM {s}.events e WHERE e.stream = $1
                               ORDER BY e.version DESC LIMIT 1), 0) + 1"
                ),
                "WHERE $2::bigint < 0 ON CONFLICT (stream, version) DO NOTHING".to_owned(),
            ),
        };
        let insert = format!(
            "INSERT INTO {s}.events (position, stream, category, version, event_type, schema_version,
                 payload, event_id, correlation_id, causation_id, command_id, recorded_at, headers)
             SELECT (pg_current_xact_id()::text::bigint << 16) | 1, $1, $3, {version},
                 $4, $5, $6::json, $7, $8, $9, $10, $11, $12::json
             {guard}
             RETURNING position, version"
        );
        if !self.recorded {
            return insert;
        }
        format!(
            "WITH ins AS ({insert}),
             cmd AS (
                 INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id,
                     causation_id, recorded_at, headers, outcome)
                 SELECT $13, $14, $1, $15::json, $16, $17, $18, $19::json, $20::json FROM ins
             )
             SELECT position, version FROM ins"
        )
    }
}

impl Sql {
    /// The statements for `schema` (already checked to be a plain identifier).
    pub(crate) fn new(schema: &str) -> Self {
        let s = schema;
        let q = |sql: String| -> Arc<str> { Arc::from(sql) };
        Self {
            // One call per append (see the `append` function in the schema). `NOTIFY` in it
            // ($22) only for appends inside a caller's transaction: PostgreSQL serializes the
            // commits of notifying transactions, so the store's own appends announce afterwards.
            commit: q(format!(
                "SELECT duplicate, ok, current_version, base, last_position, last_version FROM {s}.append(
                     $1, $2, $3, $4, $5, $6::text[], $7::integer[], $8::text[], $9::uuid[], $10::uuid[], $11::uuid[],
                     $12::uuid[], $13::timestamptz[], $14::text[], $15, $16, $17, $18, $19, $20, $21, $22, $23::text[])"
            )),
            // A lone append of untagged events in a transaction of its own: the `append`
            // function's work in one plain statement (see `Appender::try_commit`). Its
            // transaction has no id yet, so its events' positions start at its index 1.
            commit_alone: q(format!(
                "WITH cur AS (
                     SELECT coalesce((SELECT e.version FROM {s}.events e WHERE e.stream = $1
                                      ORDER BY e.version DESC LIMIT 1), 0) AS v,
                            $4::uuid IS NOT NULL
                            AND EXISTS (SELECT 1 FROM {s}.commands c WHERE c.command_id = $4) AS duplicate
                 ),
                 go AS (SELECT v FROM cur WHERE NOT duplicate AND ($2 < 0 OR v = $2)),
                 ins AS (
                     INSERT INTO {s}.events (position, stream, category, version, event_type, schema_version,
                         payload, event_id, correlation_id, causation_id, command_id, recorded_at, headers)
                     SELECT (pg_current_xact_id()::text::bigint << 16) | e.ord, $1, $3, go.v + e.ord, e.t, e.sv,
                         e.p::json, e.id, e.co, e.ca, e.cm, e.at, e.h::json
                     FROM go, unnest($5::text[], $6::integer[], $7::text[], $8::uuid[], $9::uuid[], $10::uuid[],
                                     $11::uuid[], $12::timestamptz[], $13::text[])
                          WITH ORDINALITY AS e(t, sv, p, id, co, ca, cm, at, h, ord)
                     RETURNING position, version
                 ),
                 cmd AS (
                     INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id,
                         causation_id, recorded_at, headers, outcome)
                     SELECT $4, $14, $1, $15::json, $16, $17, $18, $19::json, $20::json FROM go
                     WHERE $4::uuid IS NOT NULL
                 )
                 SELECT cur.duplicate, NOT cur.duplicate AND ($2 < 0 OR cur.v = $2), cur.v, 0::bigint,
                        (SELECT max(position) FROM ins), (SELECT max(version) FROM ins)
                 FROM cur"
            )),
            commit_one: OneEvent::ALL.map(|shape| q(shape.statement(s))),
            // Why `commit_one` appended nothing, when it had a command id to probe for.
            command_recorded: q(format!("SELECT EXISTS (SELECT 1 FROM {s}.commands WHERE command_id = $1)")),
            append_many: q(format!(
                "SELECT status, current_version, last_position, last_version FROM {s}.append_many(
                     $1::text[], $2::bigint[], $3::text[], $4::integer[], $5::uuid[], $6::text[], $7::text[], $8::uuid[],
                     $9::uuid[], $10::timestamptz[], $11::text[], $12::text[], $13::integer[], $14::text[],
                     $15::integer[], $16::text[], $17::uuid[], $18::uuid[], $19::uuid[], $20::uuid[],
                     $21::timestamptz[], $22::text[], $23::text[])"
            )),
            // The `append_many` function's query for a batch without tags (which takes no
            // locks) as one plain statement: a PL/pgSQL call added 40 % to a batch of a dozen
            // appends (its statement is planned and run apart, its rows copied through
            // `RETURN QUERY`). The parameters are the function's, without the tags.
            append_many_untagged: q(format!(
                "WITH c AS MATERIALIZED (
                     SELECT c.*,
                            coalesce((SELECT e.version FROM {s}.events e WHERE e.stream = c.stream
                                      ORDER BY e.version DESC LIMIT 1), 0) AS current,
                            (SELECT true FROM {s}.commands k WHERE k.command_id = c.command_id LIMIT 1) IS NOT NULL AS duplicate
                     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::integer[], $5::uuid[], $6::text[], $7::text[],
                                 $8::uuid[], $9::uuid[], $10::timestamptz[], $11::text[], $12::text[])
                          WITH ORDINALITY AS c(stream, expected, category, n, command_id, command_type, command_payload,
                                               command_correlation, command_causation, command_time, command_headers,
                                               outcome, i)
                 ), s AS MATERIALIZED (
                     SELECT c.*, t.status,
                            sum(c.n) OVER w - c.n AS first_event,
                            sum(CASE WHEN t.status = 0 THEN c.n ELSE 0 END) OVER w - c.n AS base,
                            pg_current_xact_id()::text::bigint << 16 AS x
                     FROM c, LATERAL (SELECT CASE WHEN c.duplicate THEN 1
                                                  WHEN c.expected >= 0 AND c.current <> c.expected THEN 2
                                                  ELSE 0 END AS status) t
                     WINDOW w AS (ORDER BY c.i)
                 ), appended AS (
                     INSERT INTO {s}.events (position, stream, category, version, event_type, schema_version, payload,
                         event_id, correlation_id, causation_id, command_id, recorded_at, headers)
                     SELECT s.x | (s.base + e.k - s.first_event), s.stream, s.category, s.current + e.k - s.first_event,
                            e.t, e.sv, e.p::json, e.id, e.co, e.ca, e.cm, e.at, e.h::json
                     FROM unnest($13::integer[], $14::text[], $15::integer[], $16::text[], $17::uuid[], $18::uuid[],
                                 $19::uuid[], $20::uuid[], $21::timestamptz[], $22::text[])
                          WITH ORDINALITY AS e(ci, t, sv, p, id, co, ca, cm, at, h, k)
                     JOIN s ON s.i = e.ci
                     WHERE s.status = 0
                 ), recorded AS (
                     INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id, causation_id,
                         recorded_at, headers, outcome)
                     SELECT s.command_id, s.command_type, s.stream, s.command_payload::json, s.command_correlation,
                            s.command_causation, s.command_time, s.command_headers::json, s.outcome::json
                     FROM s WHERE s.status = 0 AND s.command_id IS NOT NULL
                 )
                 SELECT s.status::integer, s.current, CASE WHEN s.status = 0 AND s.n > 0 THEN s.x | (s.base + s.n) END,
                        CASE WHEN s.status = 0 THEN s.current + s.n END
                 FROM s ORDER BY s.i"
            )),
            append_in_order: q(format!(
                "SELECT status, current_version, last_position, last_version FROM {s}.append_in_order(
                     $1::text[], $2::bigint[], $3::text[], $4::integer[], $5::uuid[], $6::text[], $7::text[], $8::uuid[],
                     $9::uuid[], $10::timestamptz[], $11::text[], $12::text[], $13::integer[], $14::text[],
                     $15::integer[], $16::text[], $17::uuid[], $18::uuid[], $19::uuid[], $20::uuid[],
                     $21::timestamptz[], $22::text[], $23::text[])"
            )),
            // The last index entry, not `max()`: see migration 2 in `schema.rs`.
            stream_version: q(format!(
                "SELECT coalesce((SELECT version FROM {s}.events WHERE stream = $1 ORDER BY version DESC LIMIT 1), 0)::bigint"
            )),
            read_stream: q(format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE stream = $1 AND version >= $2 ORDER BY version"
            )),
            read_stream_page: q(format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE stream = $1 AND version >= $2 \
                 ORDER BY version LIMIT $3"
            )),
            // A loose index scan: each step one seek in the (stream, version) index to the next
            // stream name ($1 the cursor, taken as well when $2), while names start with $3, at
            // most $4 of them; then each stream's last event, one seek each.
            list_streams: q(format!(
                "WITH RECURSIVE s(stream, n) AS (
                     (SELECT stream, 1 FROM {s}.events WHERE stream > $1 OR ($2 AND stream = $1)
                      ORDER BY stream LIMIT 1)
                     UNION ALL
                     SELECT (SELECT e.stream FROM {s}.events e WHERE e.stream > s.stream
                             ORDER BY e.stream LIMIT 1), s.n + 1
                     FROM s WHERE s.stream IS NOT NULL AND starts_with(s.stream, $3) AND s.n < $4
                 )
                 SELECT e.* FROM s CROSS JOIN LATERAL (
                     SELECT {EVENT_COLUMNS} FROM {s}.events WHERE stream = s.stream
                     ORDER BY version DESC LIMIT 1) e
                 WHERE starts_with(s.stream, $3) ORDER BY s.n"
            )),
            // What a fold reads: the event columns up to the payload, no metadata.
            visit_stream: q(format!(
                "SELECT {FOLD_COLUMNS} FROM {s}.events WHERE stream = $1 AND version >= $2 ORDER BY version"
            )),
            // Several stream reads at once, each row led by its read's (1-based) index. The
            // lateral subquery keeps the only plan an index lookup per read.
            read_streams: q(format!(
                "SELECT r.i, e.* FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS r(stream, from_version, i)
                 CROSS JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM {s}.events
                                     WHERE stream = r.stream AND version >= r.from_version ORDER BY version) e
                 ORDER BY r.i, e.version"
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
            last_committed: q(format!("SELECT coalesce(max(position), 0)::bigint FROM {s}.events")),
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
            // The message log: both run in one snapshot (see `LOG_SNAPSHOT`), with one set of
            // criteria bound by `store::bind_log`.
            log_commands: q(format!(
                "SELECT {COMMAND_COLUMNS} FROM {s}.commands WHERE {} ORDER BY recorded_at, sequence LIMIT $9",
                log_criteria("command_type", "target", 0, "sequence")
            )),
            log_events: q(format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE {} ORDER BY recorded_at, position LIMIT $9",
                log_criteria("event_type", "stream", 1, "position")
            )),
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
            // Parked rows sort last in the index ([`PARKED`]): `min` stops at the first row.
            next_due: q(format!(
                "SELECT min(available_at) FROM {s}.scheduled WHERE parked_at IS NULL"
            )),
            park: q(format!(
                "UPDATE {s}.scheduled SET parked_at = $2, parked_reason = $3,
                     available_at = {PARKED}
                 WHERE id = $1 AND parked_at IS NULL AND attempts = $4"
            )),
            list_parked: q(format!(
                "SELECT {SCHEDULED_COLUMNS}, parked_at, parked_reason FROM {s}.scheduled
                 WHERE id > $1 AND parked_at IS NOT NULL ORDER BY id LIMIT $2"
            )),
            // Parked rows are the last in the `available_at` index: a range, not a scan.
            count_parked: q(format!(
                "SELECT count(*) FROM (SELECT 1 FROM {s}.scheduled
                 WHERE available_at = {PARKED} AND parked_at IS NOT NULL
                 LIMIT $1) parked"
            )),
            find_parked: q(format!(
                "SELECT {SCHEDULED_COLUMNS}, parked_at, parked_reason FROM {s}.scheduled
                 WHERE id = $1 AND parked_at IS NOT NULL"
            )),
            retry_parked: q(format!(
                "UPDATE {s}.scheduled SET parked_at = NULL, parked_reason = NULL, due_at = $2,
                     available_at = $2, attempts = 0
                 WHERE id = $1 AND parked_at IS NOT NULL"
            )),
            list_processes: q(format!(
                "SELECT id, version, state::text, completed, last_position, updated_at FROM {s}.processes \
                 WHERE id COLLATE \"C\" > $1 ORDER BY id COLLATE \"C\" LIMIT $2"
            )),
            list_scheduled: q(format!(
                "SELECT {SCHEDULED_COLUMNS} FROM {s}.scheduled WHERE id > $1 AND parked_at IS NULL
                 ORDER BY id LIMIT $2"
            )),
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

#[cfg(test)]
mod tests {
    use super::OneEvent;

    #[test]
    fn each_one_event_shape_finds_its_own_statement() {
        for (i, shape) in OneEvent::ALL.into_iter().enumerate() {
            assert_eq!(shape.index(), i, "{shape:?}");
        }
    }
}
