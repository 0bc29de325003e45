use std::sync::Arc;

use crate::event::EventFilter;
use crate::store::EventStore;
use crate::testing::conformance::fixtures::{assert_quiet, event, events, n_of, stream, take};
use crate::version::{ExpectedVersion, Position};

/// A subscription first delivers what is stored, then what is appended later, woken by the
/// store, in position order and without repeats.
pub async fn subscription_catches_up_then_follows_live(store: Arc<dyn EventStore>) {
    let s = stream("seats");
    store
        .append(&s, ExpectedVersion::NoStream, events("seats.added", 1, 3))
        .await
        .expect("append");
    let mut sub = store.subscribe(Position::START, EventFilter::all());
    let caught_up = take(&mut sub, 3).await;
    assert_eq!(caught_up.iter().map(n_of).collect::<Vec<_>>(), [1, 2, 3]);
    assert_quiet(&mut sub).await;

    let writer = {
        let store = Arc::clone(&store);
        let s = s.clone();
        tokio::spawn(async move {
            for n in 4..=6 {
                store
                    .append(&s, ExpectedVersion::Any, vec![event("seats.added", n)])
                    .await
                    .expect("append");
            }
        })
    };
    let live = take(&mut sub, 3).await;
    writer.await.expect("writer");
    assert_eq!(live.iter().map(n_of).collect::<Vec<_>>(), [4, 5, 6]);
    assert!(
        caught_up
            .iter()
            .chain(&live)
            .collect::<Vec<_>>()
            .windows(2)
            .all(|w| w[0].position < w[1].position)
    );
    assert_quiet(&mut sub).await;
}

/// A subscription starts at its `from` position and delivers only what passes its filter,
/// before and after it catches up.
pub async fn subscription_from_a_position_with_a_filter(store: Arc<dyn EventStore>) {
    let (orders, seats) = (stream("order"), stream("seats"));
    let mut positions = Vec::new();
    for n in 1..=4 {
        let a = store
            .append(
                &orders,
                ExpectedVersion::Any,
                vec![event("order.placed", n)],
            )
            .await
            .expect("append");
        positions.push(a.position.expect("position"));
        store
            .append(
                &seats,
                ExpectedVersion::Any,
                vec![event("seats.reserved", n)],
            )
            .await
            .expect("append");
    }
    let mut sub = store.subscribe(positions[1], EventFilter::all().with_categories(["order"]));
    let got = take(&mut sub, 3).await;
    assert_eq!(
        got.iter().map(n_of).collect::<Vec<_>>(),
        [2, 3, 4],
        "starts at `from`, skips other categories"
    );
    assert_eq!(got[0].position, positions[1], "`from` is inclusive");
    store
        .append(
            &seats,
            ExpectedVersion::Any,
            vec![event("seats.reserved", 5)],
        )
        .await
        .expect("append");
    store
        .append(
            &orders,
            ExpectedVersion::Any,
            vec![event("order.placed", 5)],
        )
        .await
        .expect("append");
    let live = take(&mut sub, 1).await;
    assert_eq!(
        (live[0].event_type.as_str(), n_of(&live[0])),
        ("order.placed", 5)
    );
    assert_quiet(&mut sub).await;

    let mut by_type = store.subscribe(
        Position::START,
        EventFilter::all().with_types(["seats.reserved"]),
    );
    assert_eq!(
        take(&mut by_type, 5)
            .await
            .iter()
            .map(n_of)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_quiet(&mut by_type).await;
}
