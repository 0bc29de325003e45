//! Group `events`: appends, expected versions, reads, subscriptions, concurrency, and a model check.

mod model;
mod stress;
mod subscriptions;

pub use self::model::*;
pub use self::stress::*;
pub use self::subscriptions::*;

use std::sync::Arc;

use serde_json::json;

use crate::event::{EventFilter, Json, NewEvent, RecordedEvent, StreamId};
use crate::store::{Commit, EventStore, StoreError};
use crate::testing::conformance::fixtures::{
    event, events, full_metadata, n_of, settle, settle_streams, stream,
};
use crate::version::{ExpectedVersion, Position, Version};

/// Every field of an event comes back as written: stream, versions from 1, increasing
/// positions, type, schema version, payload and all metadata, from `read_stream` and `read_all`.
pub async fn append_and_read_back_round_trips_every_field(store: Arc<dyn EventStore>) {
    let s = stream("order");
    let first = NewEvent::new(
        "registration.order_placed",
        Json::from(json!({
            "seats": [{"type": "✓ general", "quantity": 3}],
            "text": "quotes \" and \\ and\nnewlines and emoji 🎟",
            "n": 1.5, "big": 9_007_199_254_740_993_u64, "none": null, "nested": {"a": {"b": [true, false]}}
        })),
    )
    .with_schema_version(3)
    .with_metadata(full_metadata(0));
    let second = NewEvent::new("registration.order_updated", Json::from(json!([])))
        .with_metadata(full_metadata(1).with_header("extra", ""));
    let written = vec![first, second];

    let appended = store
        .append(&s, ExpectedVersion::NoStream, written.clone())
        .await
        .expect("append");
    assert_eq!(
        appended.version,
        Version::new(2),
        "append returns the new stream version"
    );

    let read = store
        .read_stream(&s, Version::START)
        .await
        .expect("read_stream");
    assert_eq!(read.len(), 2);
    assert_eq!(
        appended.position,
        Some(read[1].position),
        "append returns the last event's position"
    );
    assert!(read[0].position >= Position::START, "positions start at 1");
    assert!(
        read[0].position < read[1].position,
        "positions grow in append order"
    );
    for (i, (got, want)) in read.iter().zip(&written).enumerate() {
        assert_same_event(got, want, &s, Version::new(i as u64 + 1));
    }

    settle(&*store, appended.position).await;
    let all = store.read_all(Position::START, 10).await.expect("read_all");
    assert_eq!(all, read, "read_all returns the same events as read_stream");
}

fn assert_same_event(
    got: &RecordedEvent,
    want: &NewEvent,
    s: &crate::event::StreamId,
    version: Version,
) {
    assert_eq!(&got.stream, s);
    assert_eq!(got.version, version, "versions count from 1 without gaps");
    assert_eq!(got.event_type, want.event_type);
    assert_eq!(got.schema_version, want.schema_version);
    assert_eq!(
        got.payload.to_value().expect("valid"),
        want.payload.to_value().expect("valid"),
        "payload changed"
    );
    assert_eq!(got.metadata, want.metadata, "metadata changed");
}

/// A stream that was never written reads as empty, and `head` of an empty store is zero.
pub async fn read_stream_of_missing_stream_is_empty(store: Arc<dyn EventStore>) {
    assert!(
        store
            .read_stream(&stream("nothing"), Version::START)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        store.head().await.expect("head"),
        Position::ZERO,
        "an empty store's head is zero"
    );
    assert_eq!(
        store.last_committed().await.expect("last_committed"),
        Position::ZERO,
        "nothing is committed in an empty store"
    );
    assert!(
        store
            .read_all(Position::START, 10)
            .await
            .expect("read_all")
            .is_empty()
    );
}

/// Streams are listed in byte order of their names, by prefix (a category is `"{c}-"`), a
/// page at a time after a cursor, each with its version and last event; a stream is read a
/// page at a time; categories are listed by skipping from one to the next. Names chosen so
/// that a linguistic collation would order them otherwise (`-` before letters and digits,
/// upper before lower case, a category that is a prefix of another).
pub async fn streams_are_listed_and_read_a_page_at_a_time(store: Arc<dyn EventStore>) {
    let names = [
        "order-b",
        "order-A",
        "order-a",
        "orderly-1",
        "order",
        "order-10",
        "order-9",
        "seats-x",
        "Zeta-1",
        "seat-1",
    ];
    for (i, name) in names.iter().enumerate() {
        let count = u64::try_from(i % 3 + 1).expect("small");
        store
            .append(
                &StreamId::new(*name).expect("valid"),
                ExpectedVersion::NoStream,
                events("thing.happened", 1, count),
            )
            .await
            .expect("append");
    }
    let listed = |streams: Vec<crate::store::StreamSummary>| {
        streams
            .into_iter()
            .map(|s| (s.stream.as_str().to_owned(), s.version.get()))
            .collect::<Vec<_>>()
    };
    let page = |prefix: &'static str, after: Option<&'static str>, limit| {
        let store = Arc::clone(&store);
        async move {
            listed(
                store
                    .list_streams(prefix, after, limit)
                    .await
                    .expect("list streams"),
            )
        }
    };
    let owned = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(s, v)| ((*s).to_owned(), *v))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        page("order-", None, 10).await,
        owned(&[
            ("order-10", 3),
            ("order-9", 1),
            ("order-A", 2),
            ("order-a", 3),
            ("order-b", 1)
        ]),
        "a category's streams, in byte order"
    );
    assert_eq!(
        page("order-", Some("order-9"), 2).await,
        owned(&[("order-A", 2), ("order-a", 3)]),
        "a page after a cursor"
    );
    assert_eq!(page("order-", Some("order-b"), 10).await, []);
    assert_eq!(
        page("order-", Some("a"), 1).await,
        owned(&[("order-10", 3)]),
        "a cursor before the prefix"
    );
    assert_eq!(
        page("order-", Some("p"), 10).await,
        [],
        "a cursor past the prefix"
    );
    assert_eq!(
        page("", None, 4).await,
        owned(&[("Zeta-1", 3), ("order", 2), ("order-10", 3), ("order-9", 1)]),
        "every stream"
    );
    assert_eq!(page("nothing-", None, 10).await, []);
    assert_eq!(page("", None, 0).await, []);
    let last = store
        .list_streams("order-a", None, 1)
        .await
        .expect("list")
        .remove(0);
    let read = store
        .read_stream(&last.stream, Version::START)
        .await
        .expect("read");
    let newest = read.last().expect("events");
    assert_eq!(
        (last.position, last.recorded_at),
        (newest.position, newest.metadata.recorded_at),
        "a stream's summary is its last event's"
    );

    let categories = crate::store::list_categories(&*store, None, 10)
        .await
        .expect("categories");
    assert_eq!(categories, ["Zeta", "order", "orderly", "seat", "seats"]);
    let categories = crate::store::list_categories(&*store, Some("order"), 2)
        .await
        .expect("categories");
    assert_eq!(categories, ["orderly", "seat"]);

    let s = StreamId::new("order-a").expect("valid");
    let versions =
        |events: Vec<RecordedEvent>| events.iter().map(|e| e.version.get()).collect::<Vec<_>>();
    assert_eq!(
        versions(
            store
                .read_stream_page(&s, Version::START, 2)
                .await
                .expect("page")
        ),
        [1, 2]
    );
    assert_eq!(
        versions(
            store
                .read_stream_page(&s, Version::new(3), 2)
                .await
                .expect("page")
        ),
        [3]
    );
    assert!(
        store
            .read_stream_page(&s, Version::new(4), 2)
            .await
            .expect("page")
            .is_empty()
    );
    assert!(
        store
            .read_stream_page(
                &StreamId::new("order-none").expect("valid"),
                Version::START,
                2
            )
            .await
            .expect("page")
            .is_empty()
    );
}

/// `read_stream(from)` returns the events with version ≥ `from`, in order; zero reads all.
pub async fn read_stream_from_version(store: Arc<dyn EventStore>) {
    let s = stream("seats");
    store
        .append(&s, ExpectedVersion::NoStream, events("seats.added", 1, 5))
        .await
        .expect("append");
    let versions =
        |events: Vec<RecordedEvent>| events.iter().map(|e| e.version.get()).collect::<Vec<_>>();
    assert_eq!(
        versions(store.read_stream(&s, Version::new(3)).await.expect("read")),
        [3, 4, 5]
    );
    assert_eq!(
        versions(store.read_stream(&s, Version::new(5)).await.expect("read")),
        [5]
    );
    assert!(
        store
            .read_stream(&s, Version::new(6))
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        versions(store.read_stream(&s, Version::ZERO).await.expect("read")),
        [1, 2, 3, 4, 5]
    );
    let ns: Vec<u64> = store
        .read_stream(&s, Version::START)
        .await
        .expect("read")
        .iter()
        .map(n_of)
        .collect();
    assert_eq!(
        ns,
        [1, 2, 3, 4, 5],
        "events keep their order within a batch"
    );
}

/// `NoStream` succeeds on a new stream and conflicts, with the actual version, on one that has
/// events.
pub async fn no_stream_expectation(store: Arc<dyn EventStore>) {
    let s = stream("order");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event("e", 1)])
        .await
        .expect("first append");
    let err = store
        .append(&s, ExpectedVersion::NoStream, vec![event("e", 2)])
        .await
        .expect_err("second must conflict");
    assert_conflict(&err, &s, ExpectedVersion::NoStream, Version::new(1));
}

/// `Exact(v)` succeeds only at version `v`; `Exact(0)` means no stream.
pub async fn exact_expectation(store: Arc<dyn EventStore>) {
    let s = stream("order");
    let a = store
        .append(
            &s,
            ExpectedVersion::Exact(Version::ZERO),
            vec![event("e", 1)],
        )
        .await
        .expect("exact 0");
    assert_eq!(a.version, Version::new(1));
    let a = store
        .append(
            &s,
            ExpectedVersion::Exact(Version::new(1)),
            events("e", 2, 2),
        )
        .await
        .expect("exact 1");
    assert_eq!(a.version, Version::new(3));
    let stale = store
        .append(
            &s,
            ExpectedVersion::Exact(Version::new(1)),
            vec![event("e", 9)],
        )
        .await;
    assert_conflict(
        &stale.expect_err("stale"),
        &s,
        ExpectedVersion::Exact(Version::new(1)),
        Version::new(3),
    );
    let ahead = store
        .append(
            &s,
            ExpectedVersion::Exact(Version::new(7)),
            vec![event("e", 9)],
        )
        .await;
    assert_conflict(
        &ahead.expect_err("ahead"),
        &s,
        ExpectedVersion::Exact(Version::new(7)),
        Version::new(3),
    );
    let fresh = stream("order");
    let missing = store
        .append(
            &fresh,
            ExpectedVersion::Exact(Version::new(1)),
            vec![event("e", 1)],
        )
        .await;
    assert_conflict(
        &missing.expect_err("missing"),
        &fresh,
        ExpectedVersion::Exact(Version::new(1)),
        Version::ZERO,
    );
}

/// `Any` appends whatever the version.
pub async fn any_expectation_always_appends(store: Arc<dyn EventStore>) {
    let s = stream("log");
    for n in 1..=3 {
        let a = store
            .append(&s, ExpectedVersion::Any, vec![event("e", n)])
            .await
            .expect("any");
        assert_eq!(a.version, Version::new(n));
    }
}

/// A batch that conflicts writes nothing: not its first event, not a position.
pub async fn conflicting_batch_writes_nothing(store: Arc<dyn EventStore>) {
    let s = stream("order");
    let first = store
        .append(&s, ExpectedVersion::NoStream, vec![event("e", 1)])
        .await
        .expect("append");
    let err = store
        .append(&s, ExpectedVersion::NoStream, events("e", 2, 3))
        .await
        .expect_err("conflict");
    assert!(err.is_conflict());
    settle_streams(&*store, std::slice::from_ref(&s)).await;
    assert_eq!(
        store
            .read_stream(&s, Version::START)
            .await
            .expect("read")
            .len(),
        1,
        "a failed batch left events"
    );
    assert_eq!(
        store
            .read_all(Position::START, 100)
            .await
            .expect("read_all")
            .len(),
        1
    );
    assert_eq!(
        store.head().await.expect("head"),
        first.position.expect("position"),
        "head moved"
    );
    let next = store
        .append(
            &s,
            ExpectedVersion::Exact(Version::new(1)),
            vec![event("e", 5)],
        )
        .await
        .expect("append");
    assert_eq!(
        next.version,
        Version::new(2),
        "versions stay dense after a failed batch"
    );
}

/// An empty append checks the expectation and changes nothing.
pub async fn empty_append_checks_the_expectation(store: Arc<dyn EventStore>) {
    let s = stream("order");
    let a = store
        .append(&s, ExpectedVersion::NoStream, Vec::new())
        .await
        .expect("empty append");
    assert_eq!((a.version, a.position), (Version::ZERO, None));
    store
        .append(&s, ExpectedVersion::NoStream, vec![event("e", 1)])
        .await
        .expect("append");
    let a = store
        .append(&s, ExpectedVersion::Exact(Version::new(1)), Vec::new())
        .await
        .expect("empty append");
    assert_eq!((a.version, a.position), (Version::new(1), None));
    let err = store
        .append(&s, ExpectedVersion::Exact(Version::new(4)), Vec::new())
        .await
        .expect_err("conflict");
    assert!(err.is_conflict());
    settle_streams(&*store, std::slice::from_ref(&s)).await;
    assert_eq!(
        store
            .read_all(Position::START, 10)
            .await
            .expect("read_all")
            .len(),
        1
    );
}

/// Commits that break a limit every store enforces are rejected whole: type names of 1 to
/// 200 bytes without control characters, headers without empty names or NUL characters, a
/// command record for the commit's own stream.
pub async fn invalid_commits_are_rejected(store: Arc<dyn EventStore>) {
    let s = stream("order");
    for bad in [String::new(), "x".repeat(201), "bad\u{0}name".to_owned()] {
        let err = store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![event("ok", 1), event(&bad, 2)],
            )
            .await
            .expect_err("invalid");
        assert!(
            matches!(err, StoreError::Invalid(_)),
            "expected Invalid for {bad:?}, got {err:?}"
        );
    }
    let nul =
        event("ok", 3).with_metadata(crate::event::Metadata::new().with_header("h", "a\u{0}b"));
    let err = store
        .append(&s, ExpectedVersion::Any, vec![nul])
        .await
        .expect_err("NUL in a header");
    assert!(matches!(err, StoreError::Invalid(_)), "got {err:?}");
    let unnamed = event("ok", 4).with_metadata(crate::event::Metadata::new().with_header("", "v"));
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, vec![unnamed]).await,
        Err(StoreError::Invalid(_))
    ));
    let elsewhere = crate::command::CommandRecord {
        command_id: uuid::Uuid::new_v4(),
        command_type: "order.place".into(),
        target: stream("order"),
        payload: Json::null(),
        correlation_id: None,
        causation_id: None,
        recorded_at: crate::testing::conformance::fixtures::at(0),
        headers: Default::default(),
        outcome: crate::command::Outcome::Accepted {
            version: Version::new(1),
            events: 1,
        },
    };
    let err = store
        .commit(
            crate::store::Commit::new(s.clone(), ExpectedVersion::Any, vec![event("ok", 5)])
                .with_command(elsewhere),
        )
        .await
        .expect_err("a record for another stream");
    assert!(matches!(err, StoreError::Invalid(_)), "got {err:?}");
    assert!(
        store
            .read_stream(&s, Version::START)
            .await
            .expect("read")
            .is_empty(),
        "a rejected commit wrote events"
    );
    store
        .append(&s, ExpectedVersion::Any, vec![event(&"x".repeat(200), 1)])
        .await
        .expect("200 bytes is allowed");
}

/// A batch of 1,000 events and a 256 KiB payload round-trip.
pub async fn large_batches_and_payloads_round_trip(store: Arc<dyn EventStore>) {
    let s = stream("bulk");
    store
        .append(&s, ExpectedVersion::NoStream, events("bulk.item", 1, 1000))
        .await
        .expect("append 1000");
    let read = store.read_stream(&s, Version::START).await.expect("read");
    assert_eq!(read.len(), 1000);
    assert!(
        read.iter()
            .enumerate()
            .all(|(i, e)| e.version.get() == i as u64 + 1 && n_of(e) == i as u64 + 1)
    );
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));

    let big = "é".repeat(128 * 1024);
    let b = stream("bulk");
    store
        .append(
            &b,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "bulk.big",
                Json::from(json!({ "text": big })),
            )],
        )
        .await
        .expect("append big");
    let read = store.read_stream(&b, Version::START).await.expect("read");
    assert_eq!(
        read[0].payload.to_value().expect("valid")["text"],
        json!(big)
    );
}

/// `read_all` returns events in position order, pages by `from` and `limit`, and agrees with
/// `head`.
pub async fn read_all_pages_in_global_order(store: Arc<dyn EventStore>) {
    let streams = [stream("a"), stream("b"), stream("c")];
    let mut n = 0;
    for round in 0..10 {
        for s in &streams {
            n += 1;
            let batch = if round % 3 == 0 {
                events("e", n * 10, 2)
            } else {
                vec![event("e", n * 10)]
            };
            store
                .append(s, ExpectedVersion::Any, batch)
                .await
                .expect("append");
        }
    }
    settle_streams(&*store, &streams).await;
    let everything = store
        .read_all(Position::START, 10_000)
        .await
        .expect("read_all");
    assert!(
        everything.windows(2).all(|w| w[0].position < w[1].position),
        "read_all is in position order"
    );
    let order: Vec<(String, u64)> = everything
        .iter()
        .map(|e| (e.stream.to_string(), n_of(e)))
        .collect();
    let mut expected = Vec::new();
    let mut m = 0;
    for round in 0..10 {
        for s in &streams {
            m += 1;
            let count = if round % 3 == 0 { 2 } else { 1 };
            for k in 0..count {
                expected.push((s.to_string(), m * 10 + k));
            }
        }
    }
    assert_eq!(order, expected, "read_all follows commit order");
    assert_eq!(
        store.head().await.expect("head"),
        everything.last().expect("events").position
    );

    let mut paged = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store.read_all(from, 7).await.expect("page");
        assert!(page.len() <= 7, "a page holds at most `limit` events");
        let Some(last) = page.last() else { break };
        assert!(page[0].position >= from, "a page starts at `from`");
        from = last.position.next();
        paged.extend(page);
    }
    assert_eq!(paged, everything, "paging loses or repeats nothing");
    let after = store.head().await.expect("head").next();
    assert!(
        store
            .read_all(after, 10)
            .await
            .expect("read_all")
            .is_empty()
    );
}

/// A scan of the log in pages sees what was committed between its pages, and two scans of
/// different page sizes at once read the same log. (Pages of a few hundred events, so a store
/// that reads ahead of a scan does so here.)
pub async fn read_all_pages_see_commits_between_them(store: Arc<dyn EventStore>) {
    async fn page(store: &dyn EventStore, from: Position, limit: usize) -> Vec<RecordedEvent> {
        let page = store.read_all(from, limit).await.expect("read_all");
        assert!(page.len() <= limit, "a page holds at most `limit` events");
        assert!(
            page.first().is_none_or(|e| e.position >= from),
            "a page starts at `from`"
        );
        page
    }
    let s = stream("scan");
    for b in 0..3 {
        store
            .append(&s, ExpectedVersion::Any, events("e", b * 300, 300))
            .await
            .expect("append");
    }
    settle_streams(&*store, std::slice::from_ref(&s)).await;
    // Three pages of 256, and beside them a scan in pages of 300.
    let (mut scanned, mut other) = (Vec::new(), Vec::new());
    let (mut from, mut other_from) = (Position::START, Position::START);
    for _ in 0..3 {
        let got = page(&*store, from, 256).await;
        from = got.last().expect("a full page").position.next();
        scanned.extend(got);
        let got = page(&*store, other_from, 300).await;
        other_from = got.last().expect("a full page").position.next();
        other.extend(got);
    }
    // The log's end is in the next page of 256: commit more, then page on to the end.
    store
        .append(&s, ExpectedVersion::Any, events("e", 900, 300))
        .await
        .expect("append");
    settle_streams(&*store, std::slice::from_ref(&s)).await;
    for (scan, from, limit) in [(&mut scanned, from, 256), (&mut other, other_from, 300)] {
        let mut from = from;
        loop {
            let got = page(&*store, from, limit).await;
            let Some(last) = got.last() else { break };
            from = last.position.next();
            scan.extend(got);
        }
    }
    let everything = store
        .read_all(Position::START, 10_000)
        .await
        .expect("read_all");
    assert_eq!(everything.len(), 1_200);
    assert_eq!(
        everything.iter().map(n_of).collect::<Vec<_>>(),
        (0..1_200).collect::<Vec<_>>(),
        "the log holds every event, in order"
    );
    // Positions and payloads first, so that a failure reads; then every field.
    let keys = |events: &[RecordedEvent]| -> Vec<(Position, u64)> {
        events.iter().map(|e| (e.position, n_of(e))).collect()
    };
    assert_eq!(
        keys(&scanned),
        keys(&everything),
        "pages of 256 lose or repeat nothing"
    );
    assert_eq!(
        keys(&other),
        keys(&everything),
        "pages of 300 lose or repeat nothing"
    );
    assert!(
        scanned == everything && other == everything,
        "pages read what one read does"
    );
}

/// `read_filtered` selects by type or category, reports where to continue, and ends.
pub async fn read_filtered_selects_types_and_categories(store: Arc<dyn EventStore>) {
    let (orders, seats, other) = (stream("order"), stream("seats"), stream("payment"));
    for i in 0..12 {
        store
            .append(
                &orders,
                ExpectedVersion::Any,
                vec![event(
                    if i % 2 == 0 {
                        "order.placed"
                    } else {
                        "order.updated"
                    },
                    i,
                )],
            )
            .await
            .expect("append");
        store
            .append(
                &seats,
                ExpectedVersion::Any,
                vec![event("seats.reserved", i)],
            )
            .await
            .expect("append");
        store
            .append(&other, ExpectedVersion::Any, vec![event("payment.done", i)])
            .await
            .expect("append");
    }
    settle_streams(&*store, &[orders.clone(), seats.clone(), other.clone()]).await;
    let filter = EventFilter::all()
        .with_types(["order.placed"])
        .with_categories(["seats"]);
    let mut got = Vec::new();
    let mut from = Position::START;
    for _ in 0..1000 {
        let batch = store
            .read_filtered(from, 4, &filter)
            .await
            .expect("read_filtered");
        assert!(batch.events.len() <= 4);
        assert!(batch.next >= from, "next never goes back");
        assert!(
            batch
                .events
                .iter()
                .all(|e| e.position >= from && e.position < batch.next),
            "events lie in [from, next)"
        );
        got.extend(batch.events);
        from = batch.next;
        if batch.end {
            break;
        }
    }
    let expected: Vec<_> = store
        .read_all(Position::START, 1000)
        .await
        .expect("read_all")
        .into_iter()
        .filter(|e| e.event_type == "order.placed" || e.stream.category() == "seats")
        .collect();
    assert_eq!(got.len(), 18);
    assert_eq!(
        got, expected,
        "read_filtered returns exactly the matching events, in order"
    );
    let tail = store
        .read_filtered(from, 4, &filter)
        .await
        .expect("read_filtered");
    assert!(
        tail.events.is_empty() && tail.end,
        "after the end there is nothing"
    );
    let none = store
        .read_filtered(
            Position::START,
            4,
            &EventFilter::all().with_types(["nothing"]),
        )
        .await
        .expect("read");
    assert!(none.events.is_empty());
}

fn assert_conflict(
    err: &StoreError,
    s: &crate::event::StreamId,
    expected: ExpectedVersion,
    actual: Version,
) {
    match err {
        StoreError::Conflict {
            stream,
            expected: e,
            actual: a,
        } => {
            assert_eq!(stream, s, "the conflict names the stream");
            assert_eq!(*e, expected, "the conflict carries the expectation");
            assert_eq!(*a, actual, "the conflict carries the actual version");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// A decision that notes the `n` of each event it is given, in order, and (if `commits`)
/// appends event 4 at the last version it saw.
struct Tally {
    stream: StreamId,
    seen: Arc<std::sync::Mutex<Vec<(u64, Version)>>>,
    last: Version,
    commits: bool,
}

impl crate::store::StreamDecision for Tally {
    fn event(&mut self, event: crate::event::EventView<'_>) -> std::ops::ControlFlow<()> {
        let n =
            serde_json::from_str::<serde_json::Value>(event.payload).expect("valid payload")["n"]
                .as_u64()
                .expect("payload has n");
        self.seen.lock().expect("lock").push((n, event.version));
        assert_eq!(event.stream, &self.stream, "the events are the stream's");
        self.last = event.version;
        std::ops::ControlFlow::Continue(())
    }

    fn decide(self: Box<Self>) -> Option<Commit> {
        self.commits.then(|| {
            Commit::new(
                self.stream,
                ExpectedVersion::Exact(self.last),
                vec![event("e", 4)],
            )
        })
    }
}

/// `read_then_commit` hands the decision the stream's events from `from`, in order, commits
/// what it returns, and writes nothing when it returns nothing.
pub async fn read_then_commit_decides_on_the_stream(store: Arc<dyn EventStore>) {
    let s = stream("tally");
    store
        .append(&s, ExpectedVersion::NoStream, events("e", 1, 3))
        .await
        .expect("append");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tally = |commits| {
        Box::new(Tally {
            stream: s.clone(),
            seen: Arc::clone(&seen),
            last: Version::ZERO,
            commits,
        })
    };
    let appended = store
        .read_then_commit(&s, Version::new(2), tally(true))
        .await
        .expect("read_then_commit")
        .expect("it committed");
    assert_eq!(
        *seen.lock().expect("lock"),
        [(2, Version::new(2)), (3, Version::new(3))],
        "the decision sees the events from `from`"
    );
    assert_eq!(appended.version, Version::new(4));
    let nothing = store
        .read_then_commit(&s, Version::START, tally(false))
        .await
        .expect("read_then_commit");
    assert_eq!(nothing, None);
    assert_eq!(
        store
            .read_stream(&s, Version::START)
            .await
            .expect("read")
            .len(),
        4,
        "declining wrote nothing"
    );
}

/// `visit_stream` hands over the same events as `read_stream`, in order, and stops when the
/// visitor breaks.
pub async fn visit_stream_reads_what_read_stream_reads(store: Arc<dyn EventStore>) {
    let s = stream("visited");
    store
        .append(&s, ExpectedVersion::NoStream, events("e", 1, 5))
        .await
        .expect("append");
    let read = store.read_stream(&s, Version::new(2)).await.expect("read");
    let mut visited = Vec::new();
    store
        .visit_stream(&s, Version::new(2), &mut |e| {
            visited.push((
                e.stream.clone(),
                e.version,
                e.position,
                e.event_type.to_owned(),
                e.schema_version,
                e.payload.to_owned(),
            ));
            std::ops::ControlFlow::Continue(())
        })
        .await
        .expect("visit");
    let expected: Vec<_> = read
        .iter()
        .map(|e| {
            (
                e.stream.clone(),
                e.version,
                e.position,
                e.event_type.clone(),
                e.schema_version,
                e.payload.as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(visited, expected);
    let mut taken = 0;
    store
        .visit_stream(&s, Version::START, &mut |_| {
            taken += 1;
            if taken == 2 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .await
        .expect("visit");
    assert_eq!(taken, 2, "a break stops the read");
    let mut none = 0;
    store
        .visit_stream(&stream("missing"), Version::START, &mut |_| {
            none += 1;
            std::ops::ControlFlow::Continue(())
        })
        .await
        .expect("visit");
    assert_eq!(none, 0, "a missing stream visits nothing");
}

/// `last_committed` names the newest committed event, is never behind `head`, and `head`
/// reaches it once older transactions have ended.
pub async fn head_reaches_the_last_committed_position(store: Arc<dyn EventStore>) {
    let mut newest = Position::ZERO;
    for n in 0..3 {
        let appended = store
            .append(
                &stream("committed"),
                ExpectedVersion::NoStream,
                vec![event("e", n)],
            )
            .await
            .expect("append");
        newest = appended.position.expect("a position");
    }
    let last = store.last_committed().await.expect("last_committed");
    assert_eq!(
        last, newest,
        "the last committed position is the newest append's"
    );
    assert!(
        store.head().await.expect("head") <= last,
        "head is never ahead"
    );
    crate::testing::conformance::fixtures::settle(&*store, Some(last)).await;
    assert_eq!(store.head().await.expect("head"), last);
}

/// Commits given in order land in that order, each checked against its stream as the earlier
/// ones left it; a refused one appends nothing of itself or of what follows it.
pub async fn commits_in_order_keep_their_order(store: Arc<dyn EventStore>) {
    let (x, y, z) = (stream("order"), stream("seats"), stream("payment"));
    let appended = store
        .commit_in_order(vec![
            Commit::new(x.clone(), ExpectedVersion::NoStream, events("e", 1, 2)),
            Commit::new(y.clone(), ExpectedVersion::NoStream, vec![event("e", 3)]),
            Commit::new(
                x.clone(),
                ExpectedVersion::Exact(Version::new(2)),
                vec![event("e", 4)],
            ),
        ])
        .await
        .expect("in order");
    let versions: Vec<u64> = appended.iter().map(|a| a.version.get()).collect();
    assert_eq!(versions, [2, 1, 3]);
    let positions: Vec<Position> = appended.iter().filter_map(|a| a.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    settle_streams(&*store, &[x.clone(), y.clone()]).await;
    let all = store
        .read_all(Position::START, 100)
        .await
        .expect("read_all");
    let order: Vec<(String, u64)> = all
        .iter()
        .map(|e| (e.stream.to_string(), e.version.get()))
        .collect();
    assert_eq!(
        order,
        [
            (x.to_string(), 1),
            (x.to_string(), 2),
            (y.to_string(), 1),
            (x.to_string(), 3)
        ]
    );

    let err = store
        .commit_in_order(vec![
            Commit::new(z.clone(), ExpectedVersion::NoStream, events("e", 5, 2)),
            Commit::new(
                x.clone(),
                ExpectedVersion::Exact(Version::new(1)),
                vec![event("e", 7)],
            ),
            Commit::new(
                y.clone(),
                ExpectedVersion::Exact(Version::new(1)),
                vec![event("e", 8)],
            ),
        ])
        .await
        .expect_err("the second is refused");
    assert!(err.is_conflict(), "{err}");
    settle_streams(&*store, &[x.clone(), y.clone(), z.clone()]).await;
    let read = |s: StreamId| {
        let store = Arc::clone(&store);
        async move {
            store
                .read_stream(&s, Version::START)
                .await
                .expect("read")
                .len()
        }
    };
    assert_eq!(read(x).await, 3, "the refused commit appended nothing");
    assert_eq!(read(y).await, 1, "nothing after the refused commit");
    // Stores that write the list in one transaction leave none of it; others keep the
    // commits before the refused one, whole.
    assert!([0, 2].contains(&read(z).await));
}

/// Event times keep their microseconds, whatever the instant: what is written with finer
/// precision comes back cut (not rounded) to the microsecond, from every read.
pub async fn timestamps_keep_microseconds(store: Arc<dyn EventStore>) {
    use chrono::{DateTime, Utc};

    let s = stream("clock");
    let instants: Vec<DateTime<Utc>> = [
        (0, 1_000),                   // the epoch's first microsecond
        (1_767_225_600, 999_999_999), // a nanosecond before a second: not rounded up
        (1_767_225_600, 123_456_789), // sub-microsecond digits dropped
        (4_102_444_800, 1_000),       // 2100
        (1_767_225_601, 0),           // a whole second
    ]
    .into_iter()
    .map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).expect("valid time"))
    .collect();
    let written: Vec<NewEvent> = instants
        .iter()
        .enumerate()
        .map(|(n, &t)| {
            let mut e = event("clock.ticked", n as u64);
            e.metadata.recorded_at = t;
            e
        })
        .collect();
    let appended = store
        .append(&s, ExpectedVersion::NoStream, written)
        .await
        .expect("append");
    let want: Vec<DateTime<Utc>> = instants
        .iter()
        .map(|t| {
            DateTime::from_timestamp(t.timestamp(), t.timestamp_subsec_micros() * 1_000)
                .expect("valid time")
        })
        .collect();
    let times = |events: &[RecordedEvent]| -> Vec<DateTime<Utc>> {
        events.iter().map(|e| e.metadata.recorded_at).collect()
    };
    let read = store.read_stream(&s, Version::START).await.expect("read");
    assert_eq!(times(&read), want, "read_stream keeps microseconds, cut");
    settle(&*store, appended.position).await;
    let all = store
        .read_all(Position::START, 100)
        .await
        .expect("read_all");
    assert_eq!(times(&all), want, "read_all keeps microseconds, cut");
    let filtered = store
        .read_filtered(
            Position::START,
            100,
            &EventFilter::all().with_types(["clock.ticked"]),
        )
        .await
        .expect("read_filtered");
    assert_eq!(
        times(&filtered.events),
        want,
        "read_filtered keeps microseconds, cut"
    );
}
