use std::sync::Arc;

use chrono::{TimeZone, Utc};
use cqrs_core::migrate::{Migration, MigrationError, PROGRESS_CHECKPOINT, SOURCE_POSITION};
use cqrs_core::{
    CheckpointStore, Commit, EventReader, EventStore, ExpectedVersion, InMemoryEventStore, Json,
    Metadata, NewEvent, Position, StreamId, UpcastError, Upcasters,
};
use serde_json::json;
use uuid::Uuid;

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

fn event(event_type: &str, payload: serde_json::Value, second: u32) -> NewEvent {
    let mut e = NewEvent::new(event_type, Json::encode(&payload).unwrap());
    e.metadata = Metadata::at(Utc.with_ymd_and_hms(2012, 5, 1, 9, 0, second).unwrap());
    e
}

/// An old store: orders and seats interleaved, with V1 shapes.
async fn old_store(orders: u32) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    for n in 0..orders {
        let order = stream(&format!("order-{n}"));
        store
            .commit(Commit::new(
                order.clone(),
                ExpectedVersion::NoStream,
                vec![event("placed", json!({"n": n}), n % 60)],
            ))
            .await
            .unwrap();
        store
            .commit(Commit::new(
                stream("seats-1"),
                if n == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(cqrs_core::Version::new(u64::from(n)))
                },
                vec![event("reserved", json!({"order": n}), n % 60)],
            ))
            .await
            .unwrap();
        store
            .commit(Commit::new(
                order,
                ExpectedVersion::Exact(cqrs_core::Version::START),
                vec![
                    event("totals", json!({"total": n}), n % 60),
                    event("OrderPaymentConfirmed", json!({}), n % 60),
                ],
            ))
            .await
            .unwrap();
    }
    store
}

fn chain() -> Upcasters {
    Upcasters::new()
        .rename("OrderPaymentConfirmed", 1, "confirmed", 1)
        .map("totals", 1, |mut p| {
            let free = p["total"] == 0;
            p["free"] = json!(free);
            Ok(p)
        })
}

#[tokio::test]
async fn copies_in_order_upcast_with_ids_times_and_backfilled_metadata() {
    let old = old_store(5).await;
    let new = InMemoryEventStore::new();
    let correlation = Uuid::now_v7();
    let migration = Migration::new(chain())
        .with_batch(3)
        .with_backfill(move |_, metadata| {
            metadata.correlation_id.get_or_insert(correlation);
        });
    let report = migration.run(&old, &new, &mut |_| {}).await.unwrap();
    assert_eq!((report.events_read, report.events_written), (20, 20));

    let before = old.read_all(Position::START, 100).await.unwrap();
    let after = new.read_all(Position::START, 100).await.unwrap();
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.stream, b.stream);
        assert_eq!(a.version, b.version);
        assert_eq!(a.metadata.event_id, b.metadata.event_id, "ids kept");
        assert_eq!(a.metadata.recorded_at, b.metadata.recorded_at, "times kept");
        assert_eq!(a.metadata.correlation_id, Some(correlation), "backfilled");
        assert_eq!(
            a.metadata.headers[SOURCE_POSITION],
            b.position.get().to_string()
        );
    }
    assert_eq!(after[3].event_type, "confirmed");
    assert_eq!(after[2].schema_version, 2);
    assert_eq!(
        after[2].payload.to_value().unwrap(),
        json!({"total": 0, "free": true})
    );
    // Positions keep the source's order.
    assert!(after.windows(2).all(|w| w[0].position < w[1].position));
    assert!(migration.verify(&old, &new).await.unwrap().is_identical());
}

#[tokio::test]
async fn the_prelude_comes_first_and_checkpoints_are_translated() {
    let old = old_store(4).await;
    old.save_checkpoint("process", Position::new(6))
        .await
        .unwrap();
    old.save_checkpoint("early", Position::ZERO).await.unwrap();
    let new = InMemoryEventStore::new();
    let mut created = event("conference_created", json!({"name": "devconf"}), 0);
    created.metadata = Metadata::at(Utc.with_ymd_and_hms(2012, 4, 1, 0, 0, 0).unwrap());
    let migration = Migration::new(chain())
        .with_prelude(vec![Commit::new(
            stream("conference-1"),
            ExpectedVersion::NoStream,
            vec![created],
        )])
        .with_checkpoints(["process", "early", "absent"]);
    let report = migration.run(&old, &new, &mut |_| {}).await.unwrap();
    assert_eq!(report.prelude_written, 1);
    let all = new.read_all(Position::START, 100).await.unwrap();
    assert_eq!(all[0].stream.as_str(), "conference-1");
    // Source position 6 is the 6th history event: target position 7.
    let process = new.load_checkpoint("process").await.unwrap().unwrap();
    assert_eq!(
        all[usize::try_from(process.get() - 1).unwrap()]
            .metadata
            .headers[SOURCE_POSITION],
        "6"
    );
    // A checkpoint before all history is never before the prelude's end.
    assert_eq!(
        new.load_checkpoint("early").await.unwrap(),
        Some(Position::new(1))
    );
    assert_eq!(new.load_checkpoint("absent").await.unwrap(), None);
    let verified = migration.verify(&old, &new).await.unwrap();
    assert!(verified.is_identical(), "{verified:?}");
    assert_eq!(verified.prelude, 1);
}

#[tokio::test]
async fn a_target_with_data_is_refused_and_the_source_is_untouched() {
    let old = old_store(2).await;
    let new = old_store(1).await;
    let before = old.read_all(Position::START, 100).await.unwrap();
    let err = Migration::new(chain())
        .run(&old, &new, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrationError::TargetNotEmpty { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("empty store"), "{err}");
    let err = Migration::new(chain())
        .resume(&old, &new, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrationError::NothingToResume { .. }),
        "{err}"
    );
    assert_eq!(old.read_all(Position::START, 100).await.unwrap(), before);
}

#[tokio::test]
async fn an_upcaster_error_stops_the_copy_and_a_fixed_chain_resumes_it() {
    let old = old_store(6).await;
    let new = InMemoryEventStore::new();
    let broken = Upcasters::new()
        .rename("OrderPaymentConfirmed", 1, "confirmed", 1)
        .map("totals", 1, |mut p| {
            if p["total"] == 3 {
                return Err(UpcastError::new("no rule for 3"));
            }
            let free = p["total"] == 0;
            p["free"] = json!(free);
            Ok(p)
        });
    let err = Migration::new(broken)
        .with_batch(4)
        .run(&old, &new, &mut |_| {})
        .await
        .unwrap_err();
    let MigrationError::Upcast { position, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(position.get(), 15, "order 3's totals");
    assert!(
        err.to_string().contains("fix the upcaster and resume"),
        "{err}"
    );
    let written = new.head().await.unwrap();
    assert!(written.get() < 15, "nothing from the bad event on");

    let migration = Migration::new(chain()).with_batch(4);
    let report = migration.resume(&old, &new, &mut |_| {}).await.unwrap();
    assert_eq!(report.events_written + written.get(), 24);
    assert!(migration.verify(&old, &new).await.unwrap().is_identical());
}

#[tokio::test]
async fn a_kill_at_any_point_resumes_without_loss_or_duplicates() {
    let old = Arc::new(old_store(40).await);
    for stop_after in [1usize, 3, 7, 15] {
        let new = Arc::new(InMemoryEventStore::new());
        let migration = Migration::new(chain()).with_batch(5);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = {
            let (old, new, migration) = (Arc::clone(&old), Arc::clone(&new), migration.clone());
            tokio::spawn(async move {
                migration
                    .run(old.as_ref(), new.as_ref(), &mut move |p| {
                        let _ = tx.send(p);
                    })
                    .await
            })
        };
        for _ in 0..stop_after {
            rx.recv().await;
        }
        task.abort();
        let _ = task.await;
        migration
            .resume(old.as_ref(), new.as_ref(), &mut |_| {})
            .await
            .unwrap();
        let verified = migration.verify(old.as_ref(), new.as_ref()).await.unwrap();
        assert!(
            verified.is_identical(),
            "killed after {stop_after} batches: {verified:?}"
        );
        assert_eq!(new.head().await.unwrap().get(), 160);
    }
}

#[tokio::test]
async fn events_written_before_a_lost_progress_checkpoint_are_recognised() {
    let old = old_store(10).await;
    let new = InMemoryEventStore::new();
    let migration = Migration::new(chain()).with_batch(4);
    migration.run(&old, &new, &mut |_| {}).await.unwrap();
    // As if killed after committing, before recording the progress.
    new.save_checkpoint(PROGRESS_CHECKPOINT, Position::new(9))
        .await
        .unwrap();
    let report = migration.resume(&old, &new, &mut |_| {}).await.unwrap();
    assert_eq!(report.events_written, 0);
    assert_eq!(report.events_skipped, 31);
    assert!(migration.verify(&old, &new).await.unwrap().is_identical());
}

#[tokio::test]
async fn verify_finds_what_differs() {
    let old = old_store(3).await;
    let new = InMemoryEventStore::new();
    let migration = Migration::new(chain());
    migration.run(&old, &new, &mut |_| {}).await.unwrap();
    // Something else writes to the target.
    new.commit(Commit::new(
        stream("order-0"),
        ExpectedVersion::Any,
        vec![event("rogue", json!({}), 0)],
    ))
    .await
    .unwrap();
    let verified = migration.verify(&old, &new).await.unwrap();
    assert!(!verified.is_identical());
    assert!(
        verified.differences[0].contains("more events"),
        "{verified:?}"
    );
    // Verifying against the raw source without the chain finds every renamed event.
    let raw = Migration::new(Upcasters::new())
        .verify(&old, &new)
        .await
        .unwrap();
    assert!(raw.differences.len() >= 3, "{raw:?}");
}

#[tokio::test]
async fn in_flight_processes_and_their_timeouts_come_along_translated() {
    use cqrs_core::{CommandEnvelope, ProcessSave, ProcessStore, ScheduleStore, ScheduledCommand};

    let old = old_store(5).await;
    // A process that has seen up to source position 10, with a timeout pending.
    let timeout = ScheduledCommand::new(
        CommandEnvelope {
            id: Uuid::now_v7(),
            target: stream("order-2"),
            command_type: "order.expire".into(),
            payload: Json::encode(&json!({})).unwrap(),
            correlation_id: None,
            causation_id: None,
            headers: Default::default(),
        },
        Utc.with_ymd_and_hms(2012, 5, 1, 9, 15, 0).unwrap(),
    );
    old.save_process(ProcessSave {
        id: stream("registration-2"),
        expected: cqrs_core::Version::ZERO,
        state: Json::encode(&json!({"awaiting": "payment"})).unwrap(),
        completed: false,
        last_position: Position::new(10),
        outbox: vec![timeout.clone()],
        cancel: Vec::new(),
        handled: None,
        saved_at: Utc::now(),
    })
    .await
    .unwrap();
    let new = InMemoryEventStore::new();
    let mut created = event("conference_created", json!({}), 0);
    created.metadata = Metadata::at(Utc.with_ymd_and_hms(2012, 4, 1, 0, 0, 0).unwrap());
    let migration = Migration::new(chain()).with_prelude(vec![Commit::new(
        stream("conference-1"),
        ExpectedVersion::NoStream,
        vec![created],
    )]);
    let report = migration.run(&old, &new, &mut |_| {}).await.unwrap();
    assert_eq!((report.processes, report.scheduled), (1, 1));
    let copy = new
        .load_process(&stream("registration-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        copy.state.to_value().unwrap(),
        json!({"awaiting": "payment"})
    );
    // Position 10 in the source is the event the prelude pushed to 11.
    let at = new.read_all(copy.last_position, 1).await.unwrap();
    assert_eq!(at[0].metadata.headers[SOURCE_POSITION], "10");
    assert_eq!(
        new.list_scheduled(None, 10).await.unwrap(),
        std::slice::from_ref(&timeout)
    );
    let verified = migration.verify(&old, &new).await.unwrap();
    assert!(verified.is_identical(), "{verified:?}");
    assert_eq!((verified.processes, verified.scheduled), (1, 1));
    // A resumed run copies nothing twice.
    let again = migration.resume(&old, &new, &mut |_| {}).await.unwrap();
    assert_eq!(again.processes, 0);
    assert_eq!(new.list_scheduled(None, 10).await.unwrap().len(), 1);

    // The source goes on (the old deployment still runs): the process moves, its timeout
    // fires. The next run brings the target in line.
    old.save_process(ProcessSave {
        id: stream("registration-2"),
        expected: cqrs_core::Version::new(1),
        state: Json::encode(&json!({"awaiting": "nothing"})).unwrap(),
        completed: true,
        last_position: Position::new(14),
        outbox: Vec::new(),
        cancel: Vec::new(),
        handled: None,
        saved_at: Utc::now(),
    })
    .await
    .unwrap();
    old.complete_scheduled(&[timeout.command.id]).await.unwrap();
    let synced = migration.resume(&old, &new, &mut |_| {}).await.unwrap();
    assert_eq!(synced.processes, 1);
    let copy = new
        .load_process(&stream("registration-2"))
        .await
        .unwrap()
        .unwrap();
    assert!(copy.completed);
    let at = new.read_all(copy.last_position, 1).await.unwrap();
    assert_eq!(at[0].metadata.headers[SOURCE_POSITION], "14");
    assert!(
        new.list_scheduled(None, 10).await.unwrap().is_empty(),
        "done in the source"
    );
    assert!(migration.verify(&old, &new).await.unwrap().is_identical());
}

#[tokio::test]
async fn dead_letters_come_along_parked_and_follow_the_source() {
    use cqrs_core::{CommandEnvelope, ScheduleStore, ScheduledCommand};

    let old = old_store(3).await;
    let command = |n: u32| {
        ScheduledCommand::new(
            CommandEnvelope {
                id: Uuid::now_v7(),
                target: stream(&format!("order-{n}")),
                command_type: "order.expire".into(),
                payload: Json::encode(&json!({ "n": n })).unwrap(),
                correlation_id: None,
                causation_id: None,
                headers: Default::default(),
            },
            Utc.with_ymd_and_hms(2012, 5, 1, 9, 15, 0).unwrap(),
        )
    };
    let (dead, retried, discarded) = (command(1), command(2), command(3));
    let parked_at = Utc.with_ymd_and_hms(2012, 5, 1, 9, 20, 0).unwrap();
    old.schedule(vec![dead.clone(), retried.clone(), discarded.clone()])
        .await
        .unwrap();
    for c in [&dead, &retried, &discarded] {
        assert!(
            old.park(c.command.id, 0, "no handler", parked_at)
                .await
                .unwrap()
        );
    }
    let new = InMemoryEventStore::new();
    let migration = Migration::new(chain());
    let report = migration.run(&old, &new, &mut |_| {}).await.unwrap();
    assert_eq!(
        report.scheduled, 3,
        "dead letters are counted with the schedule"
    );
    assert!(
        new.list_scheduled(None, 10).await.unwrap().is_empty(),
        "dead letters stay parked in the target: none becomes due"
    );
    let copied = new.find_parked(dead.command.id).await.unwrap().unwrap();
    assert_eq!(
        (
            copied.scheduled.command,
            copied.reason.as_str(),
            copied.parked_at
        ),
        (dead.command.clone(), "no handler", parked_at)
    );
    let verified = migration.verify(&old, &new).await.unwrap();
    assert!(verified.is_identical(), "{verified:?}");
    assert_eq!(verified.scheduled, 3);

    // Meanwhile the operator of the old deployment retries one and discards another.
    let later = Utc.with_ymd_and_hms(2012, 5, 1, 10, 0, 0).unwrap();
    assert!(old.retry_parked(retried.command.id, later).await.unwrap());
    old.complete_scheduled(&[discarded.command.id])
        .await
        .unwrap();
    migration.resume(&old, &new, &mut |_| {}).await.unwrap();
    let due: Vec<_> = new
        .list_scheduled(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.command.id, c.due_at))
        .collect();
    assert_eq!(
        due,
        [(retried.command.id, later)],
        "retried in the target too"
    );
    let parked: Vec<_> = new
        .list_parked(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.scheduled.command.id)
        .collect();
    assert_eq!(parked, [dead.command.id], "the discarded one is gone");
    assert!(migration.verify(&old, &new).await.unwrap().is_identical());

    // The retried one fails again and is parked with another reason; the one still parked is
    // retried and parked again at another due time: the next run follows both.
    let again = Utc.with_ymd_and_hms(2012, 5, 1, 11, 0, 0).unwrap();
    assert!(
        old.park(retried.command.id, 0, "failed again", again)
            .await
            .unwrap()
    );
    assert!(old.retry_parked(dead.command.id, again).await.unwrap());
    assert!(
        old.park(dead.command.id, 0, "no handler, still", again)
            .await
            .unwrap()
    );
    migration.resume(&old, &new, &mut |_| {}).await.unwrap();
    let mut parked: Vec<_> = new
        .list_parked(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.scheduled.command.id, p.reason, p.scheduled.due_at))
        .collect();
    parked.sort();
    let mut want = vec![
        (retried.command.id, "failed again".to_owned(), later),
        (dead.command.id, "no handler, still".to_owned(), again),
    ];
    want.sort();
    assert_eq!(parked, want);
    assert!(new.list_scheduled(None, 10).await.unwrap().is_empty());
    let verified = migration.verify(&old, &new).await.unwrap();
    assert!(verified.is_identical(), "{verified:?}");

    // A command pending on both sides that was parked and retried in the source between runs
    // (due at another time now) is moved in the target too.
    let pending = command(4);
    old.schedule(vec![pending.clone()]).await.unwrap();
    migration.resume(&old, &new, &mut |_| {}).await.unwrap();
    let moved_to = Utc.with_ymd_and_hms(2012, 5, 2, 9, 0, 0).unwrap();
    assert!(
        old.park(pending.command.id, 0, "failed", again)
            .await
            .unwrap()
    );
    assert!(
        old.retry_parked(pending.command.id, moved_to)
            .await
            .unwrap()
    );
    migration.resume(&old, &new, &mut |_| {}).await.unwrap();
    let due: Vec<_> = new
        .list_scheduled(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.command.id, c.due_at))
        .collect();
    assert_eq!(due, [(pending.command.id, moved_to)]);
    let verified = migration.verify(&old, &new).await.unwrap();
    assert!(verified.is_identical(), "{verified:?}");

    // A verification notices a dead letter the target lacks.
    new.complete_scheduled(&[dead.command.id]).await.unwrap();
    let verified = migration.verify(&old, &new).await.unwrap();
    assert!(
        verified
            .differences
            .iter()
            .any(|d| d.contains(&format!("parked command {} is missing", dead.command.id))),
        "{verified:?}"
    );
}
