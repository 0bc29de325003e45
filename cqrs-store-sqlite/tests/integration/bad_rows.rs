use std::sync::Arc;

use cqrs_core::{
    DecodeErrorKind, EventReader, EventStore, ExpectedVersion, InMemoryEventStore, Json, LoadError,
    NewEvent, Position, Repository, StoreError, StreamId, Version,
};
use cqrs_store_sqlite::{SqliteEventStore, rusqlite};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum NoteEvent {
    #[serde(rename = "note.written")]
    Written { text: String },
}
impl cqrs_core::DomainEvent for NoteEvent {}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum NoteCommand {
    #[serde(rename = "note.write")]
    Write { text: String },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("never")]
struct Never;

#[derive(Debug, Clone)]
struct Note;

impl cqrs_core::Aggregate for Note {
    const TYPE: &'static str = "note";
    type Id = String;
    type Command = NoteCommand;
    type Event = NoteEvent;
    type Error = Never;
    fn handle(_: Option<&Self>, _: &String, c: NoteCommand) -> Result<Vec<NoteEvent>, Never> {
        let NoteCommand::Write { text } = c;
        Ok(vec![NoteEvent::Written { text }])
    }
    fn apply(_: Option<Self>, _: &NoteEvent) -> Result<Self, cqrs_core::ApplyError> {
        Ok(Note)
    }
}

async fn store_with_notes() -> (tempfile::TempDir, SqliteEventStore, Position) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .unwrap();
    let notes = Repository::<Note>::new(Arc::new(store.clone()));
    notes
        .handle(
            &"good".to_owned(),
            NoteCommand::Write {
                text: "fine".into(),
            },
        )
        .await
        .unwrap();
    let damaged = notes
        .handle(
            &"bad".to_owned(),
            NoteCommand::Write {
                text: "soon damaged".into(),
            },
        )
        .await
        .unwrap();
    notes
        .handle(
            &"good".to_owned(),
            NoteCommand::Write {
                text: "still fine".into(),
            },
        )
        .await
        .unwrap();
    (dir, store, damaged.position.unwrap())
}

fn damage(store: &SqliteEventStore, sql: &str, position: Position) {
    let conn = rusqlite::Connection::open(store.path().unwrap()).unwrap();
    let changed = conn
        .execute(sql, [i64::try_from(position.get()).unwrap()])
        .unwrap();
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn a_corrupt_payload_is_a_decode_error_at_its_position() {
    let (_dir, store, position) = store_with_notes().await;
    damage(
        &store,
        "UPDATE cqrs_events SET payload = '{\"text\": tru' WHERE position = ?1",
        position,
    );
    let notes = Repository::<Note>::new(Arc::new(store.clone()));
    match notes.load(&"bad".to_owned()).await.unwrap_err() {
        LoadError::Decode(err) => {
            assert_eq!(err.position, position);
            assert!(
                matches!(err.kind, DecodeErrorKind::Payload(_)),
                "{:?}",
                err.kind
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(
        notes
            .load(&"good".to_owned())
            .await
            .unwrap()
            .state
            .is_some(),
        "other streams still load"
    );
    assert_eq!(
        store.read_all(Position::START, 10).await.unwrap().len(),
        3,
        "reading the raw log still works"
    );
}

#[tokio::test]
async fn an_unknown_event_type_is_a_decode_error_at_its_position() {
    let (_dir, store, position) = store_with_notes().await;
    damage(
        &store,
        "UPDATE cqrs_events SET event_type = 'note.vanished' WHERE position = ?1",
        position,
    );
    let notes = Repository::<Note>::new(Arc::new(store.clone()));
    match notes.load(&"bad".to_owned()).await.unwrap_err() {
        LoadError::Decode(err) => {
            assert_eq!(err.position, position);
            assert!(matches!(err.kind, DecodeErrorKind::UnknownType));
            assert_eq!(err.event_type, "note.vanished");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(notes.load(&"good".to_owned()).await.is_ok());
}

#[tokio::test]
async fn damaged_metadata_is_a_corrupt_row_at_its_position() {
    let (_dir, store, position) = store_with_notes().await;
    damage(
        &store,
        "UPDATE cqrs_events SET event_id = x'0102' WHERE position = ?1",
        position,
    );
    match store
        .read_stream(&StreamId::new("note-bad").unwrap(), Version::START)
        .await
        .unwrap_err()
    {
        StoreError::Corrupt { position: at, .. } => assert_eq!(at, Some(position)),
        other => panic!("expected a corrupt row, got {other:?}"),
    }
    damage(
        &store,
        "UPDATE cqrs_events SET event_id = randomblob(16), headers = 'not json' WHERE position = ?1",
        position,
    );
    let err = store
        .read_stream(&StreamId::new("note-bad").unwrap(), Version::START)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("position {position}")),
        "{err}"
    );
    assert_eq!(
        store
            .read_stream(&StreamId::new("note-good").unwrap(), Version::START)
            .await
            .unwrap()
            .len(),
        2
    );
    store
        .append(
            &StreamId::new("note-new").unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new("note.written", Json::null())],
        )
        .await
        .expect("the store still takes appends");
    let _ = InMemoryEventStore::new();
}
