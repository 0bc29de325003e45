use std::sync::Arc;

use cqrs_core::{
    EventReader, EventStore, ExpectedVersion, Json, NewEvent, StoreError, StreamId, Version,
};
use tokio::sync::Barrier;

/// Many stream reads at once share queries; each still gets exactly its stream's events from
/// the version it asked for, and a damaged row fails only the read that meets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stream_reads_each_get_their_own_events() {
    let Some(store) = super::store().await else {
        return;
    };
    let store = Arc::new(store);
    for s in 0..48_u64 {
        let stream = StreamId::new(format!("reader-{s}")).unwrap();
        let events = (0..s % 5)
            .map(|n| NewEvent::new("counted", Json::from_stored(format!("{s}{n}"))))
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let damaged = store
        .append(
            &StreamId::new("reader-damaged").unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("counted", Json::null())],
        )
        .await
        .unwrap();
    sqlx::query("UPDATE cqrs.events SET schema_version = 70000 WHERE position = $1")
        .bind(i64::try_from(damaged.position.unwrap().get()).unwrap())
        .execute(store.pool())
        .await
        .unwrap();

    for _round in 0..5 {
        let barrier = Arc::new(Barrier::new(50));
        let reads: Vec<_> = (0..50_u64)
            .map(|s| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let name = match s {
                        48 => "reader-damaged".to_owned(),
                        49 => "reader-never-written".to_owned(),
                        s => format!("reader-{s}"),
                    };
                    let from = Version::new(1 + s % 3);
                    barrier.wait().await;
                    (
                        s,
                        from,
                        store.read_stream(&StreamId::new(name).unwrap(), from).await,
                    )
                })
            })
            .collect();
        for read in reads {
            let (s, from, result) = read.await.unwrap();
            match s {
                48 => assert!(
                    matches!(result, Err(StoreError::Corrupt { position: Some(p), .. }) if Some(p) == damaged.position),
                    "{result:?}"
                ),
                49 => assert!(result.unwrap().is_empty()),
                s => {
                    let events = result.unwrap();
                    let expected: Vec<String> =
                        (from.get() - 1..s % 5).map(|n| format!("{s}{n}")).collect();
                    let got: Vec<String> = events
                        .iter()
                        .map(|e| e.payload.as_str().to_owned())
                        .collect();
                    assert_eq!(got, expected, "stream {s} from {from:?}");
                    assert!(
                        events
                            .iter()
                            .all(|e| e.stream.as_str() == format!("reader-{s}"))
                    );
                    assert!(
                        events
                            .windows(2)
                            .all(|w| w[0].version.get() + 1 == w[1].version.get())
                    );
                }
            }
        }
    }
}
