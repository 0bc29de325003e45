use cqrs_core::{
    CommandRecord, Commit, EventReader, EventStore, ExpectedVersion, Json, MessageLog, NewEvent,
    Outcome, StoreError, StreamId, Version,
};
use uuid::Uuid;

fn record(stream: &StreamId, command_id: Uuid) -> CommandRecord {
    CommandRecord {
        command_id,
        command_type: "deposit".into(),
        target: stream.clone(),
        payload: Json::parse(r#"{"amount":5}"#).unwrap(),
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        recorded_at: chrono::Utc::now(),
        headers: [("user".to_owned(), "ana".to_owned())]
            .into_iter()
            .collect(),
        outcome: Outcome::Accepted {
            version: Version::new(1),
            events: 1,
        },
    }
}

fn one(stream: &StreamId, expected: ExpectedVersion, command: Option<Uuid>) -> Commit {
    let commit = Commit::new(
        stream.clone(),
        expected,
        vec![NewEvent::new(
            "deposited",
            Json::parse(r#"{"amount":5}"#).unwrap(),
        )],
    );
    match command {
        Some(id) => commit.with_command(record(stream, id)),
        None => commit,
    }
}

/// A lone writer's one-event appends take the one-statement path: each expectation is held
/// (new, exact, behind, ahead, any), the record lands with its event, and a recorded command
/// id is reported as a duplicate whatever the stream's version, with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_appends_hold_every_expectation_and_the_record() {
    let Some(store) = super::store().await else {
        return;
    };
    let s = StreamId::new("account-1").unwrap();
    let first = Uuid::now_v7();
    let a = store
        .commit(one(&s, ExpectedVersion::NoStream, Some(first)))
        .await
        .unwrap();
    assert_eq!(a.version, Version::new(1));
    let found = store.find_command(first).await.unwrap().expect("recorded");
    assert_eq!(found.payload.as_str(), r#"{"amount":5}"#);
    assert_eq!(found.headers.get("user").map(String::as_str), Some("ana"));

    let a = store
        .commit(one(&s, ExpectedVersion::Exact(Version::new(1)), None))
        .await
        .unwrap();
    assert_eq!(a.version, Version::new(2));
    let a = store
        .commit(one(&s, ExpectedVersion::Any, Some(Uuid::now_v7())))
        .await
        .unwrap();
    assert_eq!(a.version, Version::new(3));

    for (expected, what) in [
        (ExpectedVersion::NoStream, "not new"),
        (ExpectedVersion::Exact(Version::new(2)), "behind"),
        (ExpectedVersion::Exact(Version::new(9)), "ahead"),
    ] {
        match store.commit(one(&s, expected, Some(Uuid::now_v7()))).await {
            Err(StoreError::Conflict { actual, .. }) => {
                assert_eq!(actual, Version::new(3), "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
        // The first command again: a duplicate, before any conflict.
        match store.commit(one(&s, expected, Some(first))).await {
            Err(StoreError::DuplicateCommand { command_id }) => assert_eq!(command_id, first),
            other => panic!("{what}, recorded id: {other:?}"),
        }
    }
    // And at the right version.
    match store
        .commit(one(
            &s,
            ExpectedVersion::Exact(Version::new(3)),
            Some(first),
        ))
        .await
    {
        Err(StoreError::DuplicateCommand { command_id }) => assert_eq!(command_id, first),
        other => panic!("recorded id at the head: {other:?}"),
    }
    let events = store.read_stream(&s, Version::START).await.unwrap();
    assert_eq!(events.len(), 3, "nothing refused was written");
    let positions: Vec<_> = events.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}
