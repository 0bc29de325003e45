//! The store's tables, in a schema of the user's choosing, created and upgraded by versioned
//! migrations that several processes may run at once.

use cqrs_core::StoreError;
use sqlx::{AssertSqlSafe, PgPool};

use crate::error::backend;

/// The schema version this build writes and understands.
pub(crate) const CURRENT_VERSION: i32 = 7;

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

    -- One call per append: it checks the command id (a duplicate first), then the expected
    -- version, numbers the events after the transaction's earlier ones, inserts them, records
    -- the command, and NOTIFYs when asked. Plain statements with cached plans cost PostgreSQL
    -- less per call than one large statement of CTEs.
    CREATE FUNCTION {s}.append(
        p_stream text, p_expected bigint, p_category text, p_channel text, p_command_id uuid,
        p_types text[], p_schema_versions integer[], p_payloads text[], p_event_ids uuid[],
        p_correlations uuid[], p_causations uuid[], p_commands uuid[], p_times timestamptz[], p_headers text[],
        p_command_type text, p_command_payload text, p_command_correlation uuid, p_command_causation uuid,
        p_command_time timestamptz, p_command_headers text, p_outcome text, p_notify boolean)
    RETURNS TABLE (duplicate boolean, ok boolean, current_version bigint, base bigint, last_position bigint,
                   last_version bigint)
    LANGUAGE plpgsql AS $fn$
    DECLARE
        v bigint;
        x bigint;
        b bigint := 0;
        n integer := coalesce(cardinality(p_types), 0);
    BEGIN
        IF p_command_id IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.commands c WHERE c.command_id = p_command_id) THEN
            RETURN QUERY SELECT true, false, 0::bigint, 0::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        SELECT coalesce(max(e.version), 0) INTO v FROM {s}.events e WHERE e.stream = p_stream;
        IF p_expected >= 0 AND v <> p_expected THEN
            RETURN QUERY SELECT false, false, v, 0::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF n > 0 THEN
            x := pg_current_xact_id()::text::bigint;
            SELECT coalesce(max(e.position) - (x << 16), 0) INTO b FROM {s}.events e
            WHERE e.position >= (x << 16) AND e.position < ((x + 1) << 16);
            IF b + n > 65535 THEN
                RETURN QUERY SELECT false, false, v, b, NULL::bigint, NULL::bigint;
                RETURN;
            END IF;
            INSERT INTO {s}.events (position, stream, category, version, event_type, schema_version, payload,
                event_id, correlation_id, causation_id, command_id, recorded_at, headers)
            SELECT (x << 16) | (b + e.ord), p_stream, p_category, v + e.ord, e.t, e.sv, e.p::json, e.id, e.co, e.ca,
                e.cm, e.at, e.h::json
            FROM unnest(p_types, p_schema_versions, p_payloads, p_event_ids, p_correlations, p_causations, p_commands,
                        p_times, p_headers) WITH ORDINALITY AS e(t, sv, p, id, co, ca, cm, at, h, ord);
        END IF;
        IF p_command_id IS NOT NULL THEN
            INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id, causation_id,
                recorded_at, headers, outcome)
            VALUES (p_command_id, p_command_type, p_stream, p_command_payload::json, p_command_correlation,
                p_command_causation, p_command_time, p_command_headers::json, p_outcome::json);
        END IF;
        IF p_notify AND n > 0 THEN
            PERFORM pg_notify(p_channel, '');
        END IF;
        RETURN QUERY SELECT false, true, v, b, CASE WHEN n > 0 THEN (x << 16) | (b + n) END, v + n;
    END
    $fn$;

    -- Several appends in one call and one transaction, set-based: every check reads the state
    -- before the call (the batcher never puts two appends of one stream, or of one command id,
    -- in a call), then the appends that pass are written together. Status 0 appended,
    -- 1 duplicate command, 2 conflict. The events of all appends come flattened, p_owners
    -- naming each one's append (1-based). A unique violation (another connection took a
    -- version) fails the whole call, and the caller appends one by one instead. The statement
    -- is too big to plan on every call, so its generic plan is kept; it is written so that its
    -- only plan looks rows up by index (a correlated EXISTS could be planned once, while the
    -- tables are small, as a hashed scan of the whole commands table, and kept).
    CREATE FUNCTION {s}.append_many(
        p_streams text[], p_expected bigint[], p_categories text[], p_counts integer[],
        p_command_ids uuid[], p_command_types text[], p_command_payloads text[], p_command_correlations uuid[],
        p_command_causations uuid[], p_command_times timestamptz[], p_command_headers text[], p_outcomes text[],
        p_owners integer[], p_types text[], p_schema_versions integer[], p_payloads text[], p_event_ids uuid[],
        p_correlations uuid[], p_causations uuid[], p_commands uuid[], p_times timestamptz[], p_headers text[])
    RETURNS TABLE (status integer, current_version bigint, last_position bigint, last_version bigint)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $fn$
    #variable_conflict use_column
    BEGIN
        RETURN QUERY WITH c AS MATERIALIZED (
            SELECT c.*,
                   coalesce((SELECT max(e.version) FROM {s}.events e WHERE e.stream = c.stream), 0) AS current,
                   (SELECT true FROM {s}.commands k WHERE k.command_id = c.command_id LIMIT 1) IS NOT NULL AS duplicate
            FROM unnest(p_streams, p_expected, p_categories, p_counts, p_command_ids, p_command_types, p_command_payloads,
                        p_command_correlations, p_command_causations, p_command_times, p_command_headers, p_outcomes)
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
            FROM unnest(p_owners, p_types, p_schema_versions, p_payloads, p_event_ids, p_correlations,
                        p_causations, p_commands, p_times, p_headers)
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
        SELECT s.status, s.current, CASE WHEN s.status = 0 AND s.n > 0 THEN s.x | (s.base + s.n) END,
               CASE WHEN s.status = 0 THEN s.current + s.n END
        FROM s ORDER BY s.i;
    END
    $fn$;

    CREATE TABLE {s}.processes (
        id            text PRIMARY KEY,
        version       bigint NOT NULL,
        state         json NOT NULL,
        completed     boolean NOT NULL,
        last_position bigint NOT NULL,
        updated_at    timestamptz NOT NULL
    );
    ",
    // 2: a stream's version looked up as its last index entry, not as `max()`. A cached
    // generic plan of `max(version)` could aggregate over every entry of the stream: after
    // many appends to new streams, a command on a stream of a few thousand events took 1.5 ms
    // instead of 0.6 ms, growing with the stream. `ORDER BY version DESC LIMIT 1` has one plan.
    r"
    -- One call per append: it checks the command id (a duplicate first), then the expected
    -- version, numbers the events after the transaction's earlier ones, inserts them, records
    -- the command, and NOTIFYs when asked. Plain statements with cached plans cost PostgreSQL
    -- less per call than one large statement of CTEs.
    CREATE OR REPLACE FUNCTION {s}.append(
        p_stream text, p_expected bigint, p_category text, p_channel text, p_command_id uuid,
        p_types text[], p_schema_versions integer[], p_payloads text[], p_event_ids uuid[],
        p_correlations uuid[], p_causations uuid[], p_commands uuid[], p_times timestamptz[], p_headers text[],
        p_command_type text, p_command_payload text, p_command_correlation uuid, p_command_causation uuid,
        p_command_time timestamptz, p_command_headers text, p_outcome text, p_notify boolean)
    RETURNS TABLE (duplicate boolean, ok boolean, current_version bigint, base bigint, last_position bigint,
                   last_version bigint)
    LANGUAGE plpgsql AS $fn$
    DECLARE
        v bigint;
        x bigint;
        b bigint := 0;
        n integer := coalesce(cardinality(p_types), 0);
    BEGIN
        IF p_command_id IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.commands c WHERE c.command_id = p_command_id) THEN
            RETURN QUERY SELECT true, false, 0::bigint, 0::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        v := coalesce((SELECT e.version FROM {s}.events e WHERE e.stream = p_stream ORDER BY e.version DESC LIMIT 1), 0);
        IF p_expected >= 0 AND v <> p_expected THEN
            RETURN QUERY SELECT false, false, v, 0::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF n > 0 THEN
            x := pg_current_xact_id()::text::bigint;
            SELECT coalesce(max(e.position) - (x << 16), 0) INTO b FROM {s}.events e
            WHERE e.position >= (x << 16) AND e.position < ((x + 1) << 16);
            IF b + n > 65535 THEN
                RETURN QUERY SELECT false, false, v, b, NULL::bigint, NULL::bigint;
                RETURN;
            END IF;
            INSERT INTO {s}.events (position, stream, category, version, event_type, schema_version, payload,
                event_id, correlation_id, causation_id, command_id, recorded_at, headers)
            SELECT (x << 16) | (b + e.ord), p_stream, p_category, v + e.ord, e.t, e.sv, e.p::json, e.id, e.co, e.ca,
                e.cm, e.at, e.h::json
            FROM unnest(p_types, p_schema_versions, p_payloads, p_event_ids, p_correlations, p_causations, p_commands,
                        p_times, p_headers) WITH ORDINALITY AS e(t, sv, p, id, co, ca, cm, at, h, ord);
        END IF;
        IF p_command_id IS NOT NULL THEN
            INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id, causation_id,
                recorded_at, headers, outcome)
            VALUES (p_command_id, p_command_type, p_stream, p_command_payload::json, p_command_correlation,
                p_command_causation, p_command_time, p_command_headers::json, p_outcome::json);
        END IF;
        IF p_notify AND n > 0 THEN
            PERFORM pg_notify(p_channel, '');
        END IF;
        RETURN QUERY SELECT false, true, v, b, CASE WHEN n > 0 THEN (x << 16) | (b + n) END, v + n;
    END
    $fn$;

    -- Several appends in one call and one transaction, set-based: every check reads the state
    -- before the call (the batcher never puts two appends of one stream, or of one command id,
    -- in a call), then the appends that pass are written together. Status 0 appended,
    -- 1 duplicate command, 2 conflict. The events of all appends come flattened, p_owners
    -- naming each one's append (1-based). A unique violation (another connection took a
    -- version) fails the whole call, and the caller appends one by one instead. The statement
    -- is too big to plan on every call, so its generic plan is kept; it is written so that its
    -- only plan looks rows up by index (a correlated EXISTS could be planned once, while the
    -- tables are small, as a hashed scan of the whole commands table, and kept).
    CREATE OR REPLACE FUNCTION {s}.append_many(
        p_streams text[], p_expected bigint[], p_categories text[], p_counts integer[],
        p_command_ids uuid[], p_command_types text[], p_command_payloads text[], p_command_correlations uuid[],
        p_command_causations uuid[], p_command_times timestamptz[], p_command_headers text[], p_outcomes text[],
        p_owners integer[], p_types text[], p_schema_versions integer[], p_payloads text[], p_event_ids uuid[],
        p_correlations uuid[], p_causations uuid[], p_commands uuid[], p_times timestamptz[], p_headers text[])
    RETURNS TABLE (status integer, current_version bigint, last_position bigint, last_version bigint)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $fn$
    #variable_conflict use_column
    BEGIN
        RETURN QUERY WITH c AS MATERIALIZED (
            SELECT c.*,
                   coalesce((SELECT e.version FROM {s}.events e WHERE e.stream = c.stream
                             ORDER BY e.version DESC LIMIT 1), 0) AS current,
                   (SELECT true FROM {s}.commands k WHERE k.command_id = c.command_id LIMIT 1) IS NOT NULL AS duplicate
            FROM unnest(p_streams, p_expected, p_categories, p_counts, p_command_ids, p_command_types, p_command_payloads,
                        p_command_correlations, p_command_causations, p_command_times, p_command_headers, p_outcomes)
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
            FROM unnest(p_owners, p_types, p_schema_versions, p_payloads, p_event_ids, p_correlations,
                        p_causations, p_commands, p_times, p_headers)
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
        SELECT s.status, s.current, CASE WHEN s.status = 0 AND s.n > 0 THEN s.x | (s.base + s.n) END,
               CASE WHEN s.status = 0 THEN s.current + s.n END
        FROM s ORDER BY s.i;
    END
    $fn$;
    ",
    // 3: which version of each durable read model readers see (the others are being built or
    // are being dropped).
    r"
    CREATE TABLE {s}.read_models (
        name         text PRIMARY KEY,
        live_version integer NOT NULL
    );
    ",
    // 4: tags on events, their index, and the locks that make conditional commits correct
    // (docs/adr/0011-dcb-on-postgres-locks-keyed-by-tag.md). `append` and `append_many` take
    // each event's tags as a JSON array (or NULL) in a last parameter.
    r"
    ALTER TABLE {s}.events ADD COLUMN tags text[];

    -- One row per tag and event: a tag's events in position order, read without the log.
    CREATE TABLE {s}.event_tags (
        tag      text NOT NULL,
        position bigint NOT NULL,
        PRIMARY KEY (tag, position)
    );

    -- Transaction-scoped advisory locks keyed by tag: exclusive where `p_exclusive` says so
    -- (a conditional commit's query), shared otherwise (tags being written). Taken in one
    -- global order, so that no two transactions wait on each other in a cycle.
    CREATE FUNCTION {s}.lock_tags(p_tags text[], p_exclusive boolean[]) RETURNS void
    LANGUAGE plpgsql AS $fn$
    DECLARE
        r record;
    BEGIN
        FOR r IN SELECT hashtextextended('{s}:' || u.tag, 0) AS h, bool_or(coalesce(u.x, false)) AS x
                 FROM unnest(p_tags, p_exclusive) AS u(tag, x)
                 WHERE u.tag IS NOT NULL
                 GROUP BY 1 ORDER BY 1 LOOP
            IF r.x THEN
                PERFORM pg_advisory_xact_lock(r.h);
            ELSE
                PERFORM pg_advisory_xact_lock_shared(r.h);
            END IF;
        END LOOP;
    END
    $fn$;

    -- The tags of events given as JSON arrays (NULL for none), as one array.
    CREATE FUNCTION {s}.tags_of(p_tags text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $fn$
        SELECT coalesce(array_agg(g), '{}') FROM unnest(p_tags) AS j, json_array_elements_text(j::json) AS g
        WHERE j IS NOT NULL
    $fn$;

    DROP FUNCTION {s}.append(text, bigint, text, text, uuid, text[], integer[], text[], uuid[], uuid[], uuid[],
        uuid[], timestamptz[], text[], text, text, uuid, uuid, timestamptz, text, text, boolean);
    DROP FUNCTION {s}.append_many(text[], bigint[], text[], integer[], uuid[], text[], text[], uuid[], uuid[],
        timestamptz[], text[], text[], integer[], text[], integer[], text[], uuid[], uuid[], uuid[], uuid[],
        timestamptz[], text[]);

    -- As in version 2, and: a writer of tagged events takes the log's write lock, then its
    -- tags' locks shared, before it inserts (the order conditional commits take them in), and
    -- indexes the tags; a transaction that wrote before refuses to append after a head that a
    -- younger transaction wrote.
    CREATE FUNCTION {s}.append(
        p_stream text, p_expected bigint, p_category text, p_channel text, p_command_id uuid,
        p_types text[], p_schema_versions integer[], p_payloads text[], p_event_ids uuid[],
        p_correlations uuid[], p_causations uuid[], p_commands uuid[], p_times timestamptz[], p_headers text[],
        p_command_type text, p_command_payload text, p_command_correlation uuid, p_command_causation uuid,
        p_command_time timestamptz, p_command_headers text, p_outcome text, p_notify boolean, p_tags text[])
    RETURNS TABLE (duplicate boolean, ok boolean, current_version bigint, base bigint, last_position bigint,
                   last_version bigint)
    LANGUAGE plpgsql AS $fn$
    DECLARE
        v bigint;
        x bigint;
        head bigint;
        b bigint := 0;
        n integer := coalesce(cardinality(p_types), 0);
        tagged text[] := CASE WHEN p_tags IS NULL THEN '{}'::text[] ELSE {s}.tags_of(p_tags) END;
        earlier bigint := pg_current_xact_id_if_assigned()::text::bigint;
    BEGIN
        IF p_command_id IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.commands c WHERE c.command_id = p_command_id) THEN
            RETURN QUERY SELECT true, false, 0::bigint, 0::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF earlier IS NULL THEN
            v := coalesce((SELECT e.version FROM {s}.events e WHERE e.stream = p_stream ORDER BY e.version DESC LIMIT 1), 0);
        ELSE
            SELECT e.version, e.position INTO v, head FROM {s}.events e WHERE e.stream = p_stream
            ORDER BY e.version DESC LIMIT 1;
            v := coalesce(v, 0);
        END IF;
        IF p_expected >= 0 AND v <> p_expected THEN
            RETURN QUERY SELECT false, false, v, 0::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        -- This transaction took its id before it read the stream (it wrote before): if a
        -- younger one wrote the stream's head, appending after it would place a later version
        -- at an earlier position. Refused with base -1; a new transaction can append.
        IF n > 0 AND head IS NOT NULL AND head >= ((earlier + 1) << 16) THEN
            RETURN QUERY SELECT false, false, v, -1::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF n > 0 THEN
            IF cardinality(tagged) > 0 THEN
                LOCK TABLE {s}.events IN ROW EXCLUSIVE MODE;
                PERFORM {s}.lock_tags(tagged, NULL);
            END IF;
            x := pg_current_xact_id()::text::bigint;
            SELECT coalesce(max(e.position) - (x << 16), 0) INTO b FROM {s}.events e
            WHERE e.position >= (x << 16) AND e.position < ((x + 1) << 16);
            IF b + n > 65535 THEN
                RETURN QUERY SELECT false, false, v, b, NULL::bigint, NULL::bigint;
                RETURN;
            END IF;
            INSERT INTO {s}.events (position, stream, category, version, event_type, schema_version, payload,
                event_id, correlation_id, causation_id, command_id, recorded_at, headers, tags)
            SELECT (x << 16) | (b + e.ord), p_stream, p_category, v + e.ord, e.t, e.sv, e.p::json, e.id, e.co, e.ca,
                e.cm, e.at, e.h::json,
                CASE WHEN e.tg IS NOT NULL THEN ARRAY(SELECT json_array_elements_text(e.tg::json)) END
            FROM unnest(p_types, p_schema_versions, p_payloads, p_event_ids, p_correlations, p_causations, p_commands,
                        p_times, p_headers, p_tags) WITH ORDINALITY AS e(t, sv, p, id, co, ca, cm, at, h, tg, ord);
            IF cardinality(tagged) > 0 THEN
                INSERT INTO {s}.event_tags (tag, position)
                SELECT g, (x << 16) | (b + e.ord)
                FROM unnest(p_tags) WITH ORDINALITY AS e(tg, ord), json_array_elements_text(e.tg::json) AS g
                WHERE e.tg IS NOT NULL;
            END IF;
        END IF;
        IF p_command_id IS NOT NULL THEN
            INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id, causation_id,
                recorded_at, headers, outcome)
            VALUES (p_command_id, p_command_type, p_stream, p_command_payload::json, p_command_correlation,
                p_command_causation, p_command_time, p_command_headers::json, p_outcome::json);
        END IF;
        IF p_notify AND n > 0 THEN
            PERFORM pg_notify(p_channel, '');
        END IF;
        RETURN QUERY SELECT false, true, v, b, CASE WHEN n > 0 THEN (x << 16) | (b + n) END, v + n;
    END
    $fn$;

    -- As in version 2, and: a batch with tagged events takes the log's write lock, then every
    -- tag of the batch shared, in one order, before anything else; its tags are indexed.
    CREATE FUNCTION {s}.append_many(
        p_streams text[], p_expected bigint[], p_categories text[], p_counts integer[],
        p_command_ids uuid[], p_command_types text[], p_command_payloads text[], p_command_correlations uuid[],
        p_command_causations uuid[], p_command_times timestamptz[], p_command_headers text[], p_outcomes text[],
        p_owners integer[], p_types text[], p_schema_versions integer[], p_payloads text[], p_event_ids uuid[],
        p_correlations uuid[], p_causations uuid[], p_commands uuid[], p_times timestamptz[], p_headers text[],
        p_tags text[])
    RETURNS TABLE (status integer, current_version bigint, last_position bigint, last_version bigint)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $fn$
    #variable_conflict use_column
    DECLARE
        tagged text[] := CASE WHEN p_tags IS NULL THEN '{}'::text[] ELSE {s}.tags_of(p_tags) END;
    BEGIN
        IF cardinality(tagged) > 0 THEN
            LOCK TABLE {s}.events IN ROW EXCLUSIVE MODE;
            PERFORM {s}.lock_tags(tagged, NULL);
        END IF;
        RETURN QUERY WITH c AS MATERIALIZED (
            SELECT c.*,
                   coalesce((SELECT e.version FROM {s}.events e WHERE e.stream = c.stream
                             ORDER BY e.version DESC LIMIT 1), 0) AS current,
                   (SELECT true FROM {s}.commands k WHERE k.command_id = c.command_id LIMIT 1) IS NOT NULL AS duplicate
            FROM unnest(p_streams, p_expected, p_categories, p_counts, p_command_ids, p_command_types, p_command_payloads,
                        p_command_correlations, p_command_causations, p_command_times, p_command_headers, p_outcomes)
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
                event_id, correlation_id, causation_id, command_id, recorded_at, headers, tags)
            SELECT s.x | (s.base + e.k - s.first_event), s.stream, s.category, s.current + e.k - s.first_event,
                   e.t, e.sv, e.p::json, e.id, e.co, e.ca, e.cm, e.at, e.h::json,
                   CASE WHEN e.tg IS NOT NULL THEN ARRAY(SELECT json_array_elements_text(e.tg::json)) END
            FROM unnest(p_owners, p_types, p_schema_versions, p_payloads, p_event_ids, p_correlations,
                        p_causations, p_commands, p_times, p_headers, p_tags)
                 WITH ORDINALITY AS e(ci, t, sv, p, id, co, ca, cm, at, h, tg, k)
            JOIN s ON s.i = e.ci
            WHERE s.status = 0
            RETURNING position, tags
        ), indexed AS (
            INSERT INTO {s}.event_tags (tag, position)
            SELECT g, a.position FROM appended a, unnest(a.tags) AS g
        ), recorded AS (
            INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id, causation_id,
                recorded_at, headers, outcome)
            SELECT s.command_id, s.command_type, s.stream, s.command_payload::json, s.command_correlation,
                   s.command_causation, s.command_time, s.command_headers::json, s.outcome::json
            FROM s WHERE s.status = 0 AND s.command_id IS NOT NULL
        )
        SELECT s.status, s.current, CASE WHEN s.status = 0 AND s.n > 0 THEN s.x | (s.base + s.n) END,
               CASE WHEN s.status = 0 THEN s.current + s.n END
        FROM s ORDER BY s.i;
    END
    $fn$;
    ",
    // 5: stream names compare byte by byte, whatever the database's locale: listing the
    // streams of a category (`list_streams`) is a range of the (stream, version) index only
    // when a prefix's names sort together, which a linguistic collation does not promise (it
    // may ignore `-`). Lookups by name compare the same either way; the index is rebuilt.
    r#"
    ALTER TABLE {s}.events ALTER COLUMN stream TYPE text COLLATE "C";
    "#,
    // 6: dead letters: a scheduled command the dispatcher gave up on is parked where it is,
    // with when and why, and its `available_at` set to the end of year 9999, past every claim
    // (the claim index then never visits it).
    r"
    ALTER TABLE {s}.scheduled ADD COLUMN parked_at timestamptz, ADD COLUMN parked_reason text;
    ",
    // 7: commits in order (bulk copies, a store migration), set-based: one call and one
    // transaction for a list of commits that may share streams, each checked against its
    // stream as the earlier ones leave it, all appended or none. `status` as in `append_many`;
    // `current_version` is the version the commit found (stored plus the earlier commits').
    r"
    CREATE FUNCTION {s}.append_in_order(
        p_streams text[], p_expected bigint[], p_categories text[], p_counts integer[],
        p_command_ids uuid[], p_command_types text[], p_command_payloads text[], p_command_correlations uuid[],
        p_command_causations uuid[], p_command_times timestamptz[], p_command_headers text[], p_outcomes text[],
        p_owners integer[], p_types text[], p_schema_versions integer[], p_payloads text[], p_event_ids uuid[],
        p_correlations uuid[], p_causations uuid[], p_commands uuid[], p_times timestamptz[], p_headers text[],
        p_tags text[])
    RETURNS TABLE (status integer, current_version bigint, last_position bigint, last_version bigint)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $fn$
    #variable_conflict use_column
    DECLARE
        tagged text[] := CASE WHEN p_tags IS NULL THEN '{}'::text[] ELSE {s}.tags_of(p_tags) END;
    BEGIN
        IF cardinality(tagged) > 0 THEN
            LOCK TABLE {s}.events IN ROW EXCLUSIVE MODE;
            PERFORM {s}.lock_tags(tagged, NULL);
        END IF;
        RETURN QUERY WITH c AS MATERIALIZED (
            SELECT c.*,
                   coalesce((SELECT e.version FROM {s}.events e WHERE e.stream = c.stream
                             ORDER BY e.version DESC LIMIT 1), 0) AS stored,
                   (SELECT true FROM {s}.commands k WHERE k.command_id = c.command_id LIMIT 1) IS NOT NULL AS recorded
            FROM unnest(p_streams, p_expected, p_categories, p_counts, p_command_ids, p_command_types, p_command_payloads,
                        p_command_correlations, p_command_causations, p_command_times, p_command_headers, p_outcomes)
                 WITH ORDINALITY AS c(stream, expected, category, n, command_id, command_type, command_payload,
                                      command_correlation, command_causation, command_time, command_headers,
                                      outcome, i)
        ), v AS MATERIALIZED (
            SELECT c.*,
                   c.stored + sum(c.n) OVER (PARTITION BY c.stream ORDER BY c.i) - c.n AS current,
                   sum(c.n) OVER (ORDER BY c.i) - c.n AS first_event,
                   c.recorded OR (c.command_id IS NOT NULL
                                  AND count(*) OVER (PARTITION BY c.command_id ORDER BY c.i) > 1) AS duplicate
            FROM c
        ), s AS MATERIALIZED (
            SELECT v.*, t.status, bool_and(t.status = 0) OVER () AS all_ok,
                   pg_current_xact_id()::text::bigint << 16 AS x
            FROM v, LATERAL (SELECT CASE WHEN v.duplicate THEN 1
                                         WHEN v.expected >= 0 AND v.current <> v.expected THEN 2
                                         ELSE 0 END AS status) t
        ), appended AS (
            INSERT INTO {s}.events (position, stream, category, version, event_type, schema_version, payload,
                event_id, correlation_id, causation_id, command_id, recorded_at, headers, tags)
            SELECT s.x | e.k, s.stream, s.category, s.current + e.k - s.first_event,
                   e.t, e.sv, e.p::json, e.id, e.co, e.ca, e.cm, e.at, e.h::json,
                   CASE WHEN e.tg IS NOT NULL THEN ARRAY(SELECT json_array_elements_text(e.tg::json)) END
            FROM unnest(p_owners, p_types, p_schema_versions, p_payloads, p_event_ids, p_correlations,
                        p_causations, p_commands, p_times, p_headers, p_tags)
                 WITH ORDINALITY AS e(ci, t, sv, p, id, co, ca, cm, at, h, tg, k)
            JOIN s ON s.i = e.ci
            WHERE s.all_ok
            RETURNING position, tags
        ), indexed AS (
            INSERT INTO {s}.event_tags (tag, position)
            SELECT g, a.position FROM appended a, unnest(a.tags) AS g
        ), recorded AS (
            INSERT INTO {s}.commands (command_id, command_type, target, payload, correlation_id, causation_id,
                recorded_at, headers, outcome)
            SELECT s.command_id, s.command_type, s.stream, s.command_payload::json, s.command_correlation,
                   s.command_causation, s.command_time, s.command_headers::json, s.outcome::json
            FROM s WHERE s.all_ok AND s.command_id IS NOT NULL
            ORDER BY s.i
        )
        SELECT s.status, s.current, CASE WHEN s.all_ok AND s.n > 0 THEN s.x | (s.first_event + s.n) END,
               CASE WHEN s.all_ok THEN s.current + s.n END
        FROM s ORDER BY s.i;
    END
    $fn$;
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
    let mut tx = locked(pool, schema).await?;
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

/// A transaction holding the schema's migration lock, so that processes starting together
/// change the schema one at a time.
async fn locked(
    pool: &PgPool,
    schema: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("cqrs-migrate:{schema}"))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    Ok(tx)
}

/// Creates the message log's indexes by correlation id if they are missing: an option of the
/// store (`PostgresOptions::with_correlation_index`), not a migration, as it costs every
/// append. Under the migrations' lock, so that processes starting together do it once.
///
/// # Errors
///
/// The backend error.
pub(crate) async fn correlation_index(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    let mut tx = locked(pool, schema).await?;
    // The schema name was checked to be a plain identifier (`check_schema_name`).
    let sql = format!(
        "CREATE INDEX IF NOT EXISTS events_correlation ON {schema}.events (correlation_id);
         CREATE INDEX IF NOT EXISTS commands_correlation ON {schema}.commands (correlation_id);"
    );
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    tx.commit().await.map_err(backend)
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use cqrs_core::{EventReader, EventStore, ExpectedVersion, Json, NewEvent, StreamId, Version};

    use super::*;
    use crate::PostgresEventStore;
    use crate::testing::{Durability, server};

    #[tokio::test]
    async fn a_schema_left_at_version_1_is_upgraded_in_place_and_its_streams_go_on() {
        let Some(server) = server(Durability::Fast) else {
            return;
        };
        let url = server.fresh_database().await;
        let pool = PgPool::connect(&url).await.unwrap();
        // What a build of schema version 1 left behind: its tables and functions, recorded,
        // and a stream of two events.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA cqrs;
             CREATE TABLE cqrs.cqrs_schema (version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             {}
             INSERT INTO cqrs.cqrs_schema (version) VALUES (1);
             INSERT INTO cqrs.events (position, stream, category, version, event_type, schema_version,
                 payload, event_id, recorded_at)
             SELECT (1::bigint << 16) | v, 'account-1', 'account', v, 'account.deposited', 1, '{{}}',
                 gen_random_uuid(), now()
             FROM generate_series(1, 2) AS v;",
            MIGRATIONS[0].replace("{s}", "cqrs")
        )))
        .execute(&pool)
        .await
        .unwrap();

        let store = PostgresEventStore::connect(&url).await.unwrap();
        let versions: Vec<i32> =
            sqlx::query_scalar("SELECT version FROM cqrs.cqrs_schema ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
        let stream = StreamId::new("account-1").unwrap();
        let event = || NewEvent::new("account.deposited", Json::from_stored("{}"));
        // Both functions of version 2: a lone append, then a batch of appends together.
        let appended = store
            .append(
                &stream,
                ExpectedVersion::Exact(Version::new(2)),
                vec![event()],
            )
            .await
            .unwrap();
        assert_eq!(appended.version, Version::new(3));
        assert!(matches!(
            store
                .append(
                    &stream,
                    ExpectedVersion::Exact(Version::new(2)),
                    vec![event()]
                )
                .await,
            Err(cqrs_core::StoreError::Conflict { .. })
        ));
        let others: Vec<_> = (2..10)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let stream = StreamId::new(format!("account-{i}")).unwrap();
                    store
                        .append(&stream, ExpectedVersion::NoStream, vec![event()])
                        .await
                })
            })
            .collect();
        for other in others {
            assert_eq!(other.await.unwrap().unwrap().version, Version::new(1));
        }
        assert_eq!(
            store
                .read_stream(&stream, Version::new(1))
                .await
                .unwrap()
                .len(),
            3
        );
        let definition: String = sqlx::query_scalar(
            "SELECT pg_get_functiondef('cqrs.append_many'::regproc) || pg_get_functiondef('cqrs.append'::regproc)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(!definition.contains("max(e.version)"), "{definition}");
    }
}
