use std::sync::Arc;

use cqrs_core::{
    Aggregate, ApplyError, DecodeErrorKind, DomainEvent, EventReader, LoadError, Repository,
    StoreError, StreamId, Version,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum NoteEvent {
    #[serde(rename = "note.written")]
    Written { text: String },
}
impl DomainEvent for NoteEvent {}

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

impl Aggregate for Note {
    const TYPE: &'static str = "note";
    type Id = String;
    type Command = NoteCommand;
    type Event = NoteEvent;
    type Error = Never;
    fn handle(_: Option<&Self>, _: &String, c: NoteCommand) -> Result<Vec<NoteEvent>, Never> {
        let NoteCommand::Write { text } = c;
        Ok(vec![NoteEvent::Written { text }])
    }
    fn apply(_: Option<Self>, _: &NoteEvent) -> Result<Self, ApplyError> {
        Ok(Note)
    }
}

#[tokio::test]
async fn damaged_rows_are_typed_errors_at_their_position_and_the_rest_still_works() {
    let Some(store) = super::store().await else {
        return;
    };
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
    let bad = notes
        .handle(
            &"bad".to_owned(),
            NoteCommand::Write {
                text: "soon damaged".into(),
            },
        )
        .await
        .unwrap();
    let odd = notes
        .handle(
            &"odd".to_owned(),
            NoteCommand::Write {
                text: "soon renamed".into(),
            },
        )
        .await
        .unwrap();
    let damage = |sql: &'static str, position: cqrs_core::Position| {
        let store = store.clone();
        async move {
            let changed = sqlx::query(sql)
                .bind(i64::try_from(position.get()).unwrap())
                .execute(store.pool())
                .await
                .unwrap()
                .rows_affected();
            assert_eq!(changed, 1);
        }
    };

    // A payload that is JSON but not a note: a payload error at its position.
    damage(
        "UPDATE cqrs.events SET payload = '{\"text\": 42}' WHERE position = $1",
        bad.position.unwrap(),
    )
    .await;
    match notes.load(&"bad".to_owned()).await.unwrap_err() {
        LoadError::Decode(err) => {
            assert_eq!(err.position, bad.position.unwrap());
            assert!(
                matches!(err.kind, DecodeErrorKind::Payload(_)),
                "{:?}",
                err.kind
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }

    // A type this code does not know: an unknown-type error at its position.
    damage(
        "UPDATE cqrs.events SET event_type = 'note.vanished' WHERE position = $1",
        odd.position.unwrap(),
    )
    .await;
    match notes.load(&"odd".to_owned()).await.unwrap_err() {
        LoadError::Decode(err) => {
            assert_eq!(err.position, odd.position.unwrap());
            assert!(matches!(err.kind, DecodeErrorKind::UnknownType));
        }
        other => panic!("expected a decode error, got {other:?}"),
    }

    // Headers that are not an object of strings: a corrupt row at its position.
    damage(
        "UPDATE cqrs.events SET headers = '[1, 2]' WHERE position = $1",
        odd.position.unwrap(),
    )
    .await;
    match store
        .read_stream(&StreamId::new("note-odd").unwrap(), Version::START)
        .await
        .unwrap_err()
    {
        StoreError::Corrupt { position, .. } => assert_eq!(position, odd.position),
        other => panic!("expected a corrupt row, got {other:?}"),
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
    notes
        .handle(
            &"good".to_owned(),
            NoteCommand::Write {
                text: "still taking commands".into(),
            },
        )
        .await
        .unwrap();
}
