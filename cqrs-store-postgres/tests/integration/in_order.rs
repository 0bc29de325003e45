use cqrs_core::{
    CommandRecord, Commit, DcbStore, EventQuery, EventReader, EventStore, ExpectedVersion, Headers,
    Json, MessageLog, NewEvent, Outcome, Position, QueryItem, StoreError, StreamId, Tag, Version,
};
use uuid::Uuid;

fn record(stream: &StreamId, command_id: Uuid) -> CommandRecord {
    CommandRecord {
        command_id,
        command_type: "copy".into(),
        target: stream.clone(),
        payload: Json::null(),
        correlation_id: None,
        causation_id: None,
        recorded_at: chrono::Utc::now(),
        headers: Headers::new(),
        outcome: Outcome::Accepted {
            version: Version::new(1),
            events: 1,
        },
    }
}

fn events(n: usize, tag: Option<&Tag>) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let event = NewEvent::new("copied", Json::parse(format!("{{\"i\":{i}}}")).unwrap());
            match tag {
                Some(tag) => event.with_tags([tag.clone()]),
                None => event,
            }
        })
        .collect()
}

/// A list longer than one transaction holds (70,000 events, over 65,535) lands whole and in
/// order: streams taking turns get their versions as the earlier commits leave them, tagged
/// events are indexed, each command is recorded, positions follow the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_list_lands_in_order_across_transactions() {
    let Some(store) = super::store().await else {
        return;
    };
    let streams: Vec<StreamId> = (0..3)
        .map(|i| StreamId::new(format!("copy-{i}")).unwrap())
        .collect();
    let tag = Tag::new("batch", "one").unwrap();
    let mut versions = [0_u64; 3];
    let mut commits = Vec::new();
    let mut command_ids = Vec::new();
    for c in 0..140 {
        let s = c % 3;
        let expected = match versions[s] {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(Version::new(v)),
        };
        let id = Uuid::now_v7();
        command_ids.push(id);
        commits.push(
            Commit::new(
                streams[s].clone(),
                expected,
                events(500, (c % 10 == 0).then_some(&tag)),
            )
            .with_command(record(&streams[s], id)),
        );
        versions[s] += 500;
    }
    let appended = store.commit_in_order(commits).await.expect("in order");
    assert_eq!(appended.len(), 140);
    let positions: Vec<Position> = appended.iter().map(|a| a.position.unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions follow the list"
    );
    let mut seen = [0_u64; 3];
    for (c, a) in appended.iter().enumerate() {
        seen[c % 3] += 500;
        assert_eq!(a.version.get(), seen[c % 3], "commit {c}");
    }
    for (s, stream) in streams.iter().enumerate() {
        let read = store.read_stream(stream, Version::START).await.unwrap();
        assert_eq!(read.len() as u64, versions[s]);
        assert!(read.iter().zip(1..).all(|(e, v)| e.version.get() == v));
    }
    for id in &command_ids {
        assert!(
            store.find_command(*id).await.unwrap().is_some(),
            "{id} recorded"
        );
    }
    let tagged = store
        .read_query(
            &EventQuery::items([QueryItem::tagged([tag])]),
            Position::START,
            100_000,
        )
        .await
        .unwrap();
    assert_eq!(tagged.len(), 14 * 500, "tagged events indexed");
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT position >> 16) FROM cqrs.events WHERE stream LIKE 'copy-%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(transactions, 2, "65,535 events per transaction at most");
}

/// A refused commit anywhere in a transaction's list leaves the whole list out: a stale
/// version, a command id recorded before, or one id twice in the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_leaves_the_whole_list_out() {
    let Some(store) = super::store().await else {
        return;
    };
    let (a, b) = (
        StreamId::new("refused-a").unwrap(),
        StreamId::new("refused-b").unwrap(),
    );
    let seen = Uuid::now_v7();
    store
        .commit(
            Commit::new(a.clone(), ExpectedVersion::NoStream, events(1, None))
                .with_command(record(&a, seen)),
        )
        .await
        .unwrap();
    let twice = Uuid::now_v7();
    let lists = [
        (
            vec![
                Commit::new(b.clone(), ExpectedVersion::NoStream, events(2, None)),
                Commit::new(a.clone(), ExpectedVersion::NoStream, events(1, None)),
            ],
            "stale",
        ),
        (
            vec![
                Commit::new(b.clone(), ExpectedVersion::NoStream, events(2, None)),
                Commit::new(
                    a.clone(),
                    ExpectedVersion::Exact(Version::new(1)),
                    events(1, None),
                )
                .with_command(record(&a, seen)),
            ],
            "recorded",
        ),
        (
            vec![
                Commit::new(b.clone(), ExpectedVersion::NoStream, events(2, None))
                    .with_command(record(&b, twice)),
                Commit::new(
                    a.clone(),
                    ExpectedVersion::Exact(Version::new(1)),
                    events(1, None),
                )
                .with_command(record(&a, twice)),
            ],
            "twice",
        ),
    ];
    for (list, why) in lists {
        let err = store.commit_in_order(list).await.expect_err(why);
        match (why, &err) {
            ("stale", StoreError::Conflict { actual, .. }) => assert_eq!(*actual, Version::new(1)),
            ("recorded", StoreError::DuplicateCommand { command_id }) => {
                assert_eq!(*command_id, seen);
            }
            ("twice", StoreError::DuplicateCommand { command_id }) => {
                assert_eq!(*command_id, twice);
            }
            _ => panic!("{why}: {err}"),
        }
        assert!(
            store
                .read_stream(&b, Version::START)
                .await
                .unwrap()
                .is_empty(),
            "{why}"
        );
        assert_eq!(
            store.read_stream(&a, Version::START).await.unwrap().len(),
            1,
            "{why}"
        );
    }
    assert!(store.find_command(twice).await.unwrap().is_none());
}
