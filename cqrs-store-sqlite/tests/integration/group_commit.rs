use std::sync::Arc;
use std::sync::mpsc;

use cqrs_core::{
    EventReader, EventStore, ExpectedVersion, Json, NewEvent, Position, StreamId, Version,
};
use cqrs_store_sqlite::SqliteEventStore;

/// Holds the writer busy until released, so that writes pile up behind it.
async fn stall(store: &SqliteEventStore) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let taken_before = store.writer_stats().writes;
    let blocker = store.clone();
    let task = tokio::spawn(async move {
        blocker
            .write(move |_| {
                let _ = wait.recv();
                Ok(())
            })
            .await
            .unwrap();
    });
    // The stall is running once the writer has taken its write.
    while store.writer_stats().writes <= taken_before {
        tokio::task::yield_now().await;
    }
    (release, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_appends_share_one_transaction_and_a_conflict_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .unwrap();
    let contested = StreamId::new("seats-1").unwrap();
    store
        .append(
            &contested,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("seats.added", Json::null())],
        )
        .await
        .unwrap();

    let before = store.writer_stats();
    let (release, stalled) = stall(&store).await;
    let mut appends = Vec::new();
    for i in 0..63 {
        let store = store.clone();
        appends.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("order-{i}")).unwrap();
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![NewEvent::new("order.placed", Json::null())],
                )
                .await
        }));
    }
    let loser = {
        let store = store.clone();
        let contested = contested.clone();
        tokio::spawn(async move {
            // Stale: the stream is at version 1.
            store
                .append(
                    &contested,
                    ExpectedVersion::NoStream,
                    vec![NewEvent::new("seats.added", Json::null())],
                )
                .await
        })
    };
    while store.writer_stats().queued < 64 {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    stalled.await.unwrap();
    for append in appends {
        append.await.unwrap().expect("the other appends commit");
    }
    let err = loser.await.unwrap().expect_err("the stale append fails");
    assert!(err.is_conflict(), "got {err:?}");

    let after = store.writer_stats();
    assert_eq!(after.writes - before.writes, 65, "the stall and 64 appends");
    assert_eq!(
        after.transactions - before.transactions,
        2,
        "the stall, then all 64 appends in one transaction"
    );
    assert_eq!(
        store.read_all(Position::START, 1000).await.unwrap().len(),
        64
    );
    assert_eq!(
        store
            .read_stream(&contested, Version::START)
            .await
            .unwrap()
            .len(),
        1,
        "the conflict wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_write_rolls_back_alone() {
    let store = Arc::new(SqliteEventStore::open_in_memory().await.unwrap());
    let (release, stalled) = stall(&store).await;
    let good = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append(
                    &StreamId::new("a-1").unwrap(),
                    ExpectedVersion::Any,
                    vec![NewEvent::new("e", Json::null())],
                )
                .await
        })
    };
    let bad = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .write(|conn| {
                    conn.execute(
                        "INSERT INTO cqrs_checkpoints (name, position) VALUES ('half-done', 1)",
                        [],
                    )?;
                    // Fail after writing: the savepoint must take the write back.
                    Err::<(), _>(cqrs_store_sqlite::rusqlite::Error::InvalidQuery)
                })
                .await
        })
    };
    while store.writer_stats().queued < 2 {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    stalled.await.unwrap();
    good.await.unwrap().expect("the good write commits");
    assert!(bad.await.unwrap().is_err());
    assert_eq!(
        cqrs_core::CheckpointStore::load_checkpoint(&*store, "half-done")
            .await
            .unwrap(),
        None,
        "rolled back"
    );
    assert_eq!(store.head().await.unwrap(), Position::new(1));
}

/// A decision with a bug: it panics when asked to decide.
struct Buggy;

impl cqrs_core::store::StreamDecision for Buggy {
    fn event(&mut self, _: cqrs_core::EventView<'_>) -> std::ops::ControlFlow<()> {
        std::ops::ControlFlow::Continue(())
    }

    fn decide(self: Box<Self>) -> Option<cqrs_core::Commit> {
        panic!("a bug in a decision")
    }
}

#[tokio::test]
async fn a_panicking_decision_fails_alone_and_the_writer_lives_on() {
    let store = SqliteEventStore::open_in_memory().await.unwrap();
    let stream = StreamId::new("order-1").unwrap();
    let err = store
        .read_then_commit(&stream, Version::START, Box::new(Buggy))
        .await
        .expect_err("the panic is an error");
    assert!(err.to_string().contains("storage backend failed"), "{err}");
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("order.placed", Json::null())],
        )
        .await
        .expect("the writer still writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_that_breaks_half_way_takes_its_whole_transaction_down() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .unwrap();
    // A fault the checks cannot foresee: the database itself refuses one event type.
    store
        .write(|conn| {
            conn.execute_batch(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON cqrs_events WHEN NEW.event_type = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poison refused'); END;",
            )
        })
        .await
        .unwrap();
    let append = |stream: &'static str, ty: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let events = vec![
                NewEvent::new("fine", Json::null()),
                NewEvent::new(ty, Json::null()),
            ];
            store
                .append(
                    &StreamId::new(stream).unwrap(),
                    ExpectedVersion::NoStream,
                    events,
                )
                .await
        })
    };
    let (release, stalled) = stall(&store).await;
    let before = store.writer_stats().queued;
    let first = append("a-1", "fine");
    let poison = append("b-1", "poison");
    let last = append("c-1", "fine");
    while store.writer_stats().queued < before + 3 {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    stalled.await.unwrap();
    assert!(poison.await.unwrap().is_err(), "the broken append fails");
    assert!(
        first.await.unwrap().is_err(),
        "so does every append in its transaction"
    );
    assert!(last.await.unwrap().is_err());
    assert_eq!(
        store.head().await.unwrap(),
        Position::ZERO,
        "nothing was written, not even half a batch"
    );

    append("d-1", "fine")
        .await
        .unwrap()
        .expect("the next transaction is clean");
    assert!(
        append("e-1", "poison").await.unwrap().is_err(),
        "alone, it fails too"
    );
    assert_eq!(
        store.read_all(Position::START, 10).await.unwrap().len(),
        2,
        "only the clean append is there"
    );
}

/// Commits in order are one job of the writer: all of them or none.
#[tokio::test]
async fn commits_in_order_are_all_or_nothing() {
    use cqrs_core::{
        Commit, EventReader, EventStore, ExpectedVersion, Json, NewEvent, Position, StreamId,
        Version,
    };

    let store = cqrs_store_sqlite::SqliteEventStore::open_in_memory()
        .await
        .unwrap();
    let event = || NewEvent::new("e", Json::parse("{}").unwrap());
    let (a, b) = (StreamId::new("a-1").unwrap(), StreamId::new("b-1").unwrap());
    store
        .commit(Commit::new(
            a.clone(),
            ExpectedVersion::NoStream,
            vec![event()],
        ))
        .await
        .unwrap();
    let err = store
        .commit_in_order(vec![
            Commit::new(b.clone(), ExpectedVersion::NoStream, vec![event(), event()]),
            Commit::new(a.clone(), ExpectedVersion::NoStream, vec![event()]),
        ])
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(
        store
            .read_stream(&b, Version::START)
            .await
            .unwrap()
            .is_empty(),
        "none of it"
    );
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 1);
    let appended = store
        .commit_in_order(vec![
            Commit::new(b.clone(), ExpectedVersion::NoStream, vec![event(), event()]),
            Commit::new(a, ExpectedVersion::Exact(Version::START), vec![event()]),
        ])
        .await
        .unwrap();
    assert_eq!(appended.len(), 2);
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 4);
}
