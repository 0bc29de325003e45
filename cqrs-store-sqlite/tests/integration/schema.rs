use cqrs_core::{
    EventReader, EventStore, ExpectedVersion, Json, NewEvent, StoreError, StreamId, Version,
};
use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions, rusqlite};

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
    assert_eq!(versions, [1, 2, 3], "each migration is recorded once");
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
            assert_eq!((found, supported), (99, 3))
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
        conn.execute_batch(
            "DROP TABLE cqrs_event_tags; ALTER TABLE cqrs_events DROP COLUMN tags; \
             DELETE FROM cqrs_schema WHERE version = 3;",
        )
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
