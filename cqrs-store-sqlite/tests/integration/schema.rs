use cqrs_core::{
    EventReader, EventStore, ExpectedVersion, Json, NewEvent, StoreError, StreamId, Version,
};
use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions, rusqlite};

/// Takes a file back to schema version 4, as a build before command records in event rows
/// left it (with none recorded there).
const BACK_TO_4: &str = "DROP INDEX cqrs_events_command; \
     DROP INDEX IF EXISTS cqrs_events_command_correlation; \
     ALTER TABLE cqrs_events DROP COLUMN command_type; \
     ALTER TABLE cqrs_events DROP COLUMN command_payload; \
     ALTER TABLE cqrs_events DROP COLUMN command_correlation; \
     ALTER TABLE cqrs_events DROP COLUMN command_causation; \
     ALTER TABLE cqrs_events DROP COLUMN command_recorded_at; \
     ALTER TABLE cqrs_events DROP COLUMN command_headers; \
     ALTER TABLE cqrs_events DROP COLUMN command_outcome; \
     DELETE FROM cqrs_schema WHERE version = 5;";

#[tokio::test]
async fn reopening_a_file_keeps_its_events_and_its_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let stream = StreamId::new("order-1").unwrap();
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("order.placed", Json::null())],
            )
            .await
            .unwrap();
    }
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(
        store
            .read_stream(&stream, Version::START)
            .await
            .unwrap()
            .len(),
        1
    );
    let appended = store
        .append(
            &stream,
            ExpectedVersion::Exact(Version::new(1)),
            vec![NewEvent::new("e", Json::null())],
        )
        .await
        .unwrap();
    assert_eq!(appended.version, Version::new(2));
    let versions: Vec<i64> = store
        .query(|conn| {
            let mut s = conn.prepare("SELECT version FROM cqrs_schema ORDER BY version")?;
            let rows = s.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()
        })
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5], "each migration is recorded once");
    assert_eq!(store.path(), Some(path.as_path()));
}

#[tokio::test]
async fn a_file_from_a_newer_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    drop(SqliteEventStore::open(&path).await.unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("INSERT INTO cqrs_schema (version) VALUES (99)", [])
            .unwrap();
    }
    match SqliteEventStore::open(&path).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (99, 5))
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let max: i64 = conn
        .query_row("SELECT max(version) FROM cqrs_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(max, 99, "a refused file is left as it was");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "this is not a database, but it is long enough to look like a header ......",
    )
    .unwrap();
    let err = SqliteEventStore::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "got {err:?}");
}

#[tokio::test]
async fn durability_is_a_setting_and_wal_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open_with(
        dir.path().join("fast.db"),
        SqliteOptions::default().with_durability(Durability::Normal),
    )
    .await
    .unwrap();
    let (mode, synchronous): (String, i64) = store
        .query(|conn| {
            let mode = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            Ok((mode, sync))
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(synchronous, 1, "NORMAL");
    let full = SqliteEventStore::open(dir.path().join("safe.db"))
        .await
        .unwrap();
    let synchronous: i64 = full
        .query(|conn| conn.query_row("PRAGMA synchronous", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(synchronous, 2, "FULL by default");
}

#[tokio::test]
async fn a_file_of_schema_version_2_gains_tags_and_keeps_its_events() {
    use cqrs_core::{DcbStore, EventQuery, Position, QueryItem, Tag};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let stream = StreamId::new("order-1").unwrap();
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("e", Json::null())],
            )
            .await
            .unwrap();
    }
    {
        // Back to version 2, as a build before tags left the file.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "{BACK_TO_4} DROP TABLE cqrs_event_tags; ALTER TABLE cqrs_events DROP COLUMN tags; \
                 ALTER TABLE cqrs_scheduled DROP COLUMN parked_at; \
                 ALTER TABLE cqrs_scheduled DROP COLUMN parked_reason; \
                 DELETE FROM cqrs_schema WHERE version >= 3;"
        ))
        .unwrap();
    }
    let store = SqliteEventStore::open(&path).await.unwrap();
    let events = store.read_stream(&stream, Version::START).await.unwrap();
    assert_eq!(events.len(), 1);
    assert!(
        events[0].tags.is_empty(),
        "events written before tags have none"
    );
    let tag = Tag::new("order", 1).unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::Exact(Version::new(1)),
            vec![NewEvent::new("e", Json::null()).with_tags([tag.clone()])],
        )
        .await
        .unwrap();
    let tagged = store
        .read_query(
            &EventQuery::items([QueryItem::tagged([tag])]),
            Position::START,
            10,
        )
        .await
        .unwrap();
    assert_eq!(tagged.len(), 1, "the upgraded file indexes tags");
}

#[tokio::test]
async fn a_file_of_schema_version_3_keeps_its_schedule_and_gains_dead_letters() {
    use cqrs_core::{CommandEnvelope, ScheduleStore, ScheduledCommand};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let command = |n: u32| {
        ScheduledCommand::new(
            CommandEnvelope {
                id: uuid::Uuid::new_v4(),
                target: StreamId::new(format!("order-{n}")).unwrap(),
                command_type: "order.expire".into(),
                payload: Json::null(),
                correlation_id: None,
                causation_id: None,
                headers: Default::default(),
            },
            chrono::Utc::now(),
        )
    };
    let (first, second) = (command(1), command(2));
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        store
            .schedule(vec![first.clone(), second.clone()])
            .await
            .unwrap();
    }
    {
        // Back to version 3, as a build before dead letters left the file.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "{BACK_TO_4} ALTER TABLE cqrs_scheduled DROP COLUMN parked_at; \
                 ALTER TABLE cqrs_scheduled DROP COLUMN parked_reason; \
                 DELETE FROM cqrs_schema WHERE version = 4;"
        ))
        .unwrap();
    }
    let store = SqliteEventStore::open(&path).await.unwrap();
    let due = chrono::Utc::now() + chrono::Duration::seconds(1);
    let claimed = store
        .claim_due(due, 10, chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2, "what was scheduled is still due");
    assert!(
        store
            .park(first.command.id, 1, "no handler", chrono::Utc::now())
            .await
            .unwrap()
    );
    let parked = store.list_parked(None, 10).await.unwrap();
    assert_eq!(parked.len(), 1, "the upgraded file keeps dead letters");
    assert_eq!(parked[0].scheduled.command.id, first.command.id);
}

#[tokio::test]
async fn the_correlation_index_is_an_option_that_a_flow_query_uses() {
    use cqrs_core::{Commit, LogQuery, MessageLog, Metadata};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let flow = uuid::Uuid::new_v4();
    let indexes = async |store: &SqliteEventStore| -> Vec<String> {
        store
            .query(|conn| {
                let mut s = conn.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'index' \
                     AND name LIKE '%correlation' ORDER BY name",
                )?;
                let rows = s.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()
            })
            .await
            .unwrap()
    };
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        assert!(indexes(&store).await.is_empty(), "off by default");
        for n in 0..20 {
            let correlation = if n == 7 { flow } else { uuid::Uuid::new_v4() };
            store
                .commit(Commit::new(
                    StreamId::new(format!("order-{n}")).unwrap(),
                    ExpectedVersion::NoStream,
                    vec![
                        NewEvent::new("order.placed", Json::null())
                            .with_metadata(Metadata::new().with_correlation_id(correlation)),
                    ],
                ))
                .await
                .unwrap();
        }
    }
    let store =
        SqliteEventStore::open_with(&path, SqliteOptions::default().with_correlation_index(true))
            .await
            .unwrap();
    assert_eq!(
        indexes(&store).await,
        [
            "cqrs_commands_correlation",
            "cqrs_events_command_correlation",
            "cqrs_events_correlation"
        ],
        "created on an existing file"
    );
    // The plan of a flow's query, as `query_log` asks it.
    let plan = async |sql: &'static str| -> String {
        store
            .query(move |conn| {
                let mut s = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = s.query_map([flow.as_bytes().as_slice()], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?.join("; "))
            })
            .await
            .unwrap()
    };
    let events = plan(
        "SELECT position FROM cqrs_events e WHERE 1 = 1 \
         AND e.correlation_id IN (?1) ORDER BY e.recorded_at, e.position LIMIT 100",
    )
    .await;
    assert!(
        events.contains("USING INDEX cqrs_events_correlation"),
        "a flow's events are found through the index: {events}"
    );
    let records = plan(
        "SELECT position FROM cqrs_events e \
         WHERE e.command_type IS NOT NULL AND e.command_correlation IN (?1) \
         ORDER BY e.command_recorded_at, e.position LIMIT 100",
    )
    .await;
    assert!(
        records.contains("USING INDEX cqrs_events_command_correlation"),
        "so are the records kept in event rows: {records}"
    );
    let found = store
        .query_log(&LogQuery {
            correlation_ids: vec![flow],
            ..LogQuery::new()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    drop(store);
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(
        indexes(&store).await.len(),
        3,
        "opening without the option leaves them"
    );
}

#[tokio::test]
async fn a_file_of_schema_version_4_keeps_its_command_records_and_keeps_new_ones_in_event_rows() {
    use cqrs_core::{
        CommandRecord, Commit, LogQuery, LoggedMessage, MessageLog, Metadata, Outcome,
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let stream = StreamId::new("order-1").unwrap();
    let record = |version: u64| CommandRecord {
        command_id: uuid::Uuid::now_v7(),
        command_type: "order.place".into(),
        target: stream.clone(),
        payload: Json::null(),
        correlation_id: None,
        causation_id: None,
        recorded_at: chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
            .unwrap(),
        headers: Default::default(),
        outcome: Outcome::Accepted {
            version: Version::new(version),
            events: 1,
        },
    };
    // A commit as the repository makes it: its event names its command.
    let commit = |record: &CommandRecord, expected: ExpectedVersion| {
        Commit::new(
            stream.clone(),
            expected,
            vec![
                NewEvent::new("order.placed", Json::null())
                    .with_metadata(Metadata::new().with_command_id(record.command_id)),
            ],
        )
        .with_command(record.clone())
    };
    let rows = async |store: &SqliteEventStore| -> (i64, i64) {
        store
            .query(|conn| {
                conn.query_row(
                    "SELECT (SELECT count(*) FROM cqrs_commands), \
                     (SELECT count(*) FROM cqrs_events WHERE command_type IS NOT NULL)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
            .unwrap()
    };
    let old = record(1);
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(BACK_TO_4).unwrap();
    }
    {
        // What a version-4 build wrote: the record in `cqrs_commands`, beside its event.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO cqrs_commands (command_id, command_type, target, payload, recorded_at, outcome) \
             VALUES (?1, 'order.place', 'order-1', 'null', ?2, ?3)",
            rusqlite::params![
                old.command_id.as_bytes().as_slice(),
                old.recorded_at.timestamp_micros(),
                serde_json::to_string(&old.outcome).unwrap()
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO cqrs_events (stream, category, version, event_type, schema_version, payload, \
             event_id, command_id, recorded_at) VALUES ('order-1', 'order', 1, 'order.placed', 1, \
             'null', ?1, ?2, ?3)",
            rusqlite::params![
                uuid::Uuid::now_v7().as_bytes().as_slice(),
                old.command_id.as_bytes().as_slice(),
                old.recorded_at.timestamp_micros()
            ],
        )
        .unwrap();
    }
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(
        store.find_command(old.command_id).await.unwrap(),
        Some(old.clone())
    );
    let new = record(2);
    store
        .commit(commit(&new, ExpectedVersion::Exact(Version::new(1))))
        .await
        .unwrap();
    assert_eq!(
        rows(&store).await,
        (1, 1),
        "the new record is in its event's row, the old one where it was"
    );
    assert_eq!(
        store.find_command(new.command_id).await.unwrap(),
        Some(new.clone())
    );
    let log: Vec<_> = store
        .query_log(&LogQuery::new())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.message {
            LoggedMessage::Command(c) => Some(c.command_id),
            LoggedMessage::Event(_) => None,
        })
        .collect();
    assert_eq!(log, [old.command_id, new.command_id], "both, in log order");
    for known in [&old, &new] {
        let err = store
            .commit(commit(known, ExpectedVersion::Any))
            .await
            .unwrap_err();
        assert!(err.is_duplicate_command(), "got {err:?}");
    }
    assert_eq!(rows(&store).await, (1, 1), "a duplicate writes nothing");

    // A damaged record in a row is an error naming that event's position.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE cqrs_events SET command_outcome = 'nonsense' WHERE command_type IS NOT NULL",
            [],
        )
        .unwrap();
    match store.find_command(new.command_id).await {
        Err(StoreError::Corrupt { position, what }) => {
            assert_eq!(position, Some(cqrs_core::Position::new(2)), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        store.find_command(old.command_id).await.unwrap(),
        Some(old),
        "the rest still reads"
    );
}
