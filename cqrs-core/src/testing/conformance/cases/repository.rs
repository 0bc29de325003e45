//! Group `repository`: a [`Repository`] over the whole store, idempotent and snapshotting.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::command::{CommandContext, Outcome};
use crate::decision::{Decider, Decision};
use crate::event::StreamId;
use crate::event::{Json, Metadata, NewEvent};
use crate::message::DomainEvent;
use crate::repository::CommandError;
use crate::repository::{Repository, SnapshotPolicy};
use crate::store::{Snapshot, Storage};
use crate::testing::conformance::fixtures::{
    LoanCommand, LoanError, LoanEvent, Loans, LoansOnTheBook, Tally, TallyCommand, TallyError,
    TallyEvent, at,
};
use crate::upcast::{UpcastError, Upcasters};
use crate::version::{ExpectedVersion, Version};
use tokio::sync::Barrier;

/// Through a repository, a command id handled before is not executed again: an accepted one
/// returns the same events and version, a rejected one the same error, even after the state
/// changed.
pub async fn repository_commands_are_idempotent(store: Arc<dyn Storage>) {
    let tallies = Repository::<Tally>::new(Arc::clone(&store));
    let id = format!("t{}", Uuid::new_v4().simple());
    tallies
        .handle(&id, TallyCommand::Open { limit: 10 })
        .await
        .expect("open");
    let add = CommandContext::new();
    let first = tallies
        .handle_with(&id, TallyCommand::Add { amount: 4 }, add.clone())
        .await
        .expect("add");
    assert!(!first.replayed);
    let again = tallies
        .handle_with(&id, TallyCommand::Add { amount: 4 }, add.clone())
        .await
        .expect("same id");
    assert!(again.replayed, "the second handling is a replay");
    assert_eq!(
        (again.version, again.position, &again.events),
        (first.version, first.position, &first.events)
    );
    assert_eq!(again.events, [TallyEvent::Added { amount: 4 }]);
    assert_eq!(
        tallies
            .load(&id)
            .await
            .expect("load")
            .state
            .expect("exists")
            .total,
        4,
        "the command ran once"
    );

    let over = CommandContext::new();
    let err = tallies
        .handle_with(&id, TallyCommand::Add { amount: 7 }, over.clone())
        .await
        .expect_err("over limit");
    assert_eq!(
        err.rejection(),
        Some(&TallyError::OverLimit {
            amount: 7,
            limit: 10
        })
    );
    tallies
        .handle(&id, TallyCommand::Add { amount: 0 })
        .await
        .expect("a command that causes nothing is accepted");
    let err = tallies
        .handle_with(&id, TallyCommand::Add { amount: 7 }, over.clone())
        .await
        .expect_err("same id");
    assert_eq!(
        err.rejection(),
        Some(&TallyError::OverLimit {
            amount: 7,
            limit: 10
        }),
        "the recorded rejection comes back"
    );

    let err = tallies
        .handle_with(&id, TallyCommand::Open { limit: 1 }, add.clone())
        .await
        .expect_err("reused id");
    assert!(
        matches!(err, crate::repository::CommandError::CommandIdReused { .. }),
        "a command id reused for another command type is an error, got {err:?}"
    );
    let other = format!("t{}", Uuid::new_v4().simple());
    let err = tallies
        .handle_with(&other, TallyCommand::Open { limit: 1 }, add)
        .await
        .expect_err("reused id");
    assert!(
        matches!(err, crate::repository::CommandError::CommandIdReused { .. }),
        "got {err:?}"
    );

    let logged = store
        .find_command(over.command_id)
        .await
        .expect("find")
        .expect("recorded");
    assert!(matches!(logged.outcome, Outcome::Rejected { .. }));
    assert_eq!(
        logged.correlation_id,
        Some(over.command_id),
        "a command starting a flow correlates by its own id"
    );
    let events = store
        .read_stream(
            &<Tally as crate::aggregate::Aggregate>::stream_id(&id).expect("stream"),
            Version::START,
        )
        .await
        .expect("read");
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].metadata.command_id,
        Some(first.command_id),
        "events name their command"
    );
    assert_eq!(
        events[1].metadata.causation_id,
        Some(first.command_id),
        "a command causes its events"
    );
}

/// A repository with a snapshot policy saves snapshots and loads through them to the same
/// state, and ignores a snapshot of another schema version.
pub async fn repository_loads_through_snapshots(store: Arc<dyn Storage>) {
    let tallies =
        Repository::<Tally>::new(Arc::clone(&store)).with_snapshots(SnapshotPolicy::every(5));
    let id = format!("snap{}", uuid::Uuid::new_v4().simple());
    tallies
        .handle(&id, TallyCommand::Open { limit: 1_000 })
        .await
        .expect("open");
    for amount in 1..=12 {
        tallies
            .handle(&id, TallyCommand::Add { amount })
            .await
            .expect("add");
    }
    let s = <Tally as Aggregate>::stream_id(&id).expect("stream");
    let snapshot = store
        .load_snapshot(&s, Tally::SNAPSHOT_VERSION)
        .await
        .expect("load")
        .expect("a snapshot was taken");
    assert_eq!(
        snapshot.version,
        Version::new(10),
        "every 5 events: the last snapshot is at 10"
    );
    let loaded = tallies.load(&id).await.expect("load");
    assert_eq!(loaded.version, Version::new(13));
    assert_eq!(
        loaded.state,
        Some(Tally {
            total: 78,
            limit: 1_000
        })
    );

    // A snapshot of another schema (a newer build's, say) is ignored, not misread.
    store
        .save_snapshot(Snapshot {
            stream: s.clone(),
            version: Version::new(12),
            schema_version: 99,
            state: Json::from(json!({ "total": "garbage" })),
            taken_at: at(0),
        })
        .await
        .expect("save");
    let loaded = tallies
        .load(&id)
        .await
        .expect("load ignores the foreign snapshot");
    assert_eq!(
        loaded.state,
        Some(Tally {
            total: 78,
            limit: 1_000
        })
    );
}

/// An upcaster that reads the stored metadata gets it, through a repository, on loads and on
/// commands alike, even from a store whose own fold reads leave the metadata out.
pub async fn repository_upcasters_read_the_stored_metadata(store: Arc<dyn Storage>) {
    let id = format!("meta{}", Uuid::new_v4().simple());
    let s = <Tally as Aggregate>::stream_id(&id).expect("stream");
    // As an older build wrote it: schema version 0 kept the amount in a header.
    let old = |amount: &str| {
        NewEvent::new("tally.added", Json::from(json!({})))
            .with_schema_version(0)
            .with_metadata(Metadata::new().with_header("amount", amount))
    };
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new("tally.opened", Json::from(json!({ "limit": 100 }))),
                old("7"),
                old("5"),
            ],
        )
        .await
        .expect("append");
    let upcasters =
        Upcasters::new().map_with_metadata("tally.added", 0, |mut payload, metadata| {
            let amount: u64 = metadata
                .headers
                .get("amount")
                .ok_or_else(|| UpcastError::new("no amount header"))?
                .parse()
                .map_err(|_| UpcastError::new("the amount header is not a number"))?;
            payload["amount"] = json!(amount);
            Ok(payload)
        });
    let tallies = Repository::<Tally>::new(Arc::clone(&store)).with_upcasters(upcasters);
    let loaded = tallies.load(&id).await.expect("load");
    assert_eq!(
        loaded.state,
        Some(Tally {
            total: 12,
            limit: 100
        }),
        "the upcaster read each event's header"
    );
    tallies
        .handle(&id, TallyCommand::Add { amount: 80 })
        .await
        .expect("a command decides on the upcast events");
    let err = tallies
        .handle(&id, TallyCommand::Add { amount: 9 })
        .await
        .expect_err("the limit counts the upcast amounts");
    assert_eq!(
        err.rejection(),
        Some(&TallyError::OverLimit {
            amount: 9,
            limit: 100
        })
    );
}

/// A [`Decider`] over the store keeps a rule across streams and is idempotent by command id:
/// an accepted command is replayed with the same events and placement, a rejected one with the
/// same error even after the state changed, an id reused for another command is refused, and
/// every command is in the message log with its outcome.
pub async fn decisions_are_recorded_and_idempotent(store: Arc<dyn Storage>) {
    let decider = Decider::<Loans>::new(Arc::clone(&store));
    let unique = |what: &str| format!("{what}{}", Uuid::new_v4().simple());
    let (member, other) = (unique("m"), unique("m"));
    let [b1, b2, b3, b4] = [0; 4].map(|_| unique("b"));
    let lend = |m: &str, b: &str| LoanCommand::Lend {
        member: m.into(),
        book: b.into(),
    };
    let book = |b: &str| StreamId::for_aggregate("book", &b).expect("short");

    let context = CommandContext::new();
    let first = decider
        .handle_with(lend(&member, &b1), context.clone())
        .await
        .expect("lend");
    let lent = LoanEvent::Lent {
        member: member.clone(),
        book: b1.clone(),
    };
    assert!(!first.replayed);
    assert_eq!(first.events, std::slice::from_ref(&lent));
    assert_eq!(first.streams, [book(&b1)]);
    assert_eq!(first.target, book(&b1));
    assert_eq!(first.appended.len(), 1);
    assert_eq!(first.appended[0].0, book(&b1));
    assert_eq!(first.appended[0].1.version, Version::new(1));
    assert_eq!(first.position, first.appended[0].1.position);
    let stored = store
        .read_stream(&book(&b1), Version::START)
        .await
        .expect("read");
    assert_eq!(stored.len(), 1);
    let mut tags = lent.tags();
    tags.sort();
    assert_eq!(stored[0].tags, tags, "the event carries its tags");
    assert_eq!(stored[0].metadata.command_id, Some(context.command_id));
    let record = store
        .find_command(context.command_id)
        .await
        .expect("find")
        .expect("recorded");
    assert_eq!(record.target, book(&b1));
    assert!(
        matches!(record.outcome, Outcome::Accepted { events: 1, .. }),
        "{:?}",
        record.outcome
    );

    let again = decider
        .handle_with(lend(&member, &b1), context.clone())
        .await
        .expect("the same id");
    assert!(again.replayed, "the second handling is a replay");
    assert_eq!(
        (
            &again.events,
            &again.streams,
            &again.appended,
            again.position
        ),
        (
            &first.events,
            &first.streams,
            &first.appended,
            first.position
        )
    );
    assert_eq!(
        store
            .read_stream(&book(&b1), Version::START)
            .await
            .expect("read")
            .len(),
        1,
        "the command ran once"
    );

    let refused = CommandContext::new();
    let err = decider
        .handle_with(lend(&other, &b1), refused.clone())
        .await
        .expect_err("the book is out");
    assert_eq!(err.rejection(), Some(&LoanError::Lent(b1.clone())));
    let record = store
        .find_command(refused.command_id)
        .await
        .expect("find")
        .expect("the rejection is recorded");
    assert!(matches!(record.outcome, Outcome::Rejected { .. }));
    decider
        .handle(LoanCommand::GiveBack {
            member: member.clone(),
            book: b1.clone(),
        })
        .await
        .expect("give back");
    let err = decider
        .handle_with(lend(&other, &b1), refused)
        .await
        .expect_err("the recorded rejection, though the book is back");
    assert_eq!(err.rejection(), Some(&LoanError::Lent(b1.clone())));

    let err = decider
        .handle_with(lend(&member, &b2), context)
        .await
        .expect_err("an id used for another command");
    assert!(
        matches!(err, CommandError::CommandIdReused { ref target, .. } if *target == book(&b1)),
        "{err}"
    );

    decider.handle(lend(&member, &b2)).await.expect("b2");
    decider.handle(lend(&member, &b3)).await.expect("b3");
    let err = decider
        .handle(lend(&member, &b4))
        .await
        .expect_err("the limit");
    assert_eq!(
        err.rejection(),
        Some(&LoanError::TooMany(member.clone(), Loans::LIMIT))
    );
    assert!(
        store
            .read_stream(&book(&b4), Version::START)
            .await
            .expect("read")
            .is_empty(),
        "a rejection appends nothing"
    );
}

/// Deciders racing on one member (each lending another book) and on one book (each for
/// another member) keep the rule across streams: exactly two loans (the limit) for the
/// member, one for the book, every other command rejected with the rule's reason, none lost or
/// doubled. Ten rounds of eight racers each.
pub async fn racing_decisions_keep_a_rule_across_streams(store: Arc<dyn Storage>) {
    const RACERS: usize = 8;
    let decider = Decider::<Loans>::new(Arc::clone(&store));
    let unique = |what: &str| format!("{what}{}", Uuid::new_v4().simple());
    for _ in 0..10 {
        let member = unique("m");
        let one_member: Vec<_> = (0..RACERS)
            .map(|_| LoanCommand::Lend {
                member: member.clone(),
                book: unique("b"),
            })
            .collect();
        let book = unique("b");
        let one_book: Vec<_> = (0..RACERS)
            .map(|_| LoanCommand::Lend {
                member: unique("m"),
                book: book.clone(),
            })
            .collect();
        for (commands, wins, rejection) in [
            (
                one_member,
                Loans::LIMIT,
                LoanError::TooMany(member.clone(), Loans::LIMIT),
            ),
            (one_book, 1, LoanError::Lent(book.clone())),
        ] {
            let barrier = Arc::new(Barrier::new(RACERS));
            let racers: Vec<_> = commands
                .into_iter()
                .map(|command| {
                    let (decider, barrier) = (decider.clone(), Arc::clone(&barrier));
                    tokio::spawn(async move {
                        barrier.wait().await;
                        decider.handle(command).await
                    })
                })
                .collect();
            let mut accepted = Vec::new();
            for racer in racers {
                match racer.await.expect("racer") {
                    Ok(decided) => accepted.push(decided),
                    Err(err) => assert_eq!(
                        err.rejection(),
                        Some(&rejection),
                        "a loser is rejected by the rule: {err}"
                    ),
                }
            }
            assert_eq!(accepted.len(), wins, "{rejection}: winners");
        }
        let query = Loans::query(&LoanCommand::Lend {
            member: member.clone(),
            book: book.clone(),
        });
        let mut lent = (0, 0);
        let mut from = crate::version::Position::START;
        loop {
            let page = store.read_query(&query, from, 100).await.expect("read");
            let Some(last) = page.last() else { break };
            from = last.position.next();
            for event in &page {
                let decoded = Upcasters::new()
                    .decode::<LoanEvent>(event)
                    .expect("decodes");
                for loan in decoded {
                    if let LoanEvent::Lent { member: m, book: b } = loan {
                        lent.0 += usize::from(m == member);
                        lent.1 += usize::from(b == book);
                    }
                }
            }
        }
        assert_eq!(lent, (Loans::LIMIT, 1), "the log holds exactly the winners");
    }
}

/// A decision that reads its target stream commits only while the target is as it read it:
/// members racing for one book, whose queries (one member each) do not overlap, still get the
/// book once, the losers rejected by the rule on a fresh read, never a conflict; and a book
/// given back by another writer is free. Ten rounds of eight racers.
pub async fn decisions_reading_their_target_keep_its_version(store: Arc<dyn Storage>) {
    const RACERS: usize = 8;
    let decider = Decider::<LoansOnTheBook>::new(Arc::clone(&store));
    let unique = |what: &str| format!("{what}{}", Uuid::new_v4().simple());
    for _ in 0..10 {
        let book = unique("b");
        let barrier = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                let command = LoanCommand::Lend {
                    member: unique("m"),
                    book: book.clone(),
                };
                let (decider, barrier) = (decider.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    decider.handle(command).await
                })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            match racer.await.expect("racer") {
                Ok(_) => winners += 1,
                Err(err) => assert_eq!(
                    err.rejection(),
                    Some(&LoanError::Lent(book.clone())),
                    "a loser is rejected by the rule: {err}"
                ),
            }
        }
        assert_eq!(winners, 1, "one member gets the book");
        let stream = StreamId::for_aggregate("book", &book).expect("short");
        let stored = store
            .read_stream(&stream, Version::START)
            .await
            .expect("read");
        assert_eq!(stored.len(), 1, "the log holds exactly the winner");
    }

    // The holder comes from the book's stream, whoever wrote it: a book given back by another
    // writer, not through the decider, is free.
    let (holder, member, book) = (unique("m"), unique("m"), unique("b"));
    decider
        .handle(LoanCommand::Lend {
            member: holder.clone(),
            book: book.clone(),
        })
        .await
        .expect("lent");
    let stream = StreamId::for_aggregate("book", &book).expect("short");
    let given_back = LoanEvent::GivenBack {
        member: holder,
        book: book.clone(),
    };
    let (event_type, payload) = crate::message::encode_message(&given_back).expect("encodes");
    store
        .append(
            &stream,
            ExpectedVersion::Exact(Version::new(1)),
            vec![NewEvent::new(event_type, payload)],
        )
        .await
        .expect("given back by another writer");
    decider
        .handle(LoanCommand::Lend {
            member,
            book: book.clone(),
        })
        .await
        .expect("the decider reads the book's new version");
}
