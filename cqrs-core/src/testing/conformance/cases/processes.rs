//! Group `processes`: process state saved with its outbox and handled command.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Duration;
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::command::{CommandEnvelope, CommandRecord, Outcome};
use crate::event::{Json, StreamId};
use crate::store::{ProcessSave, ScheduledCommand, StoreError};
use crate::testing::conformance::ProcessesAndSchedule;
use crate::testing::conformance::fixtures::{at, attempt, scheduled, stream};
use crate::version::{ExpectedVersion, Position, Version};

/// As many concurrent savers as the stress cases' writers.
const WRITERS: usize = 16;

/// A process instance's state, its outbox and the command it handled commit together or not
/// at all; versions guard concurrent saves.
pub async fn process_state_and_outbox_commit_together(store: Arc<dyn ProcessesAndSchedule>) {
    let id = stream("registration");
    let target = stream("order");
    assert_eq!(store.load_process(&id).await.expect("load"), None);
    let save = |expected: u64,
                outbox: Vec<ScheduledCommand>,
                handled: Option<CommandRecord>,
                completed: bool| ProcessSave {
        id: id.clone(),
        expected: Version::new(expected),
        state: Json::from(json!({ "state": "awaiting", "n": expected })),
        completed,
        last_position: Position::new(expected + 7),
        outbox,
        cancel: Vec::new(),
        handled,
        saved_at: at(i64::try_from(expected).expect("small")),
    };
    let (first, second) = (scheduled(&target, 0), scheduled(&target, 15));
    store
        .save_process(save(0, vec![first.clone(), second.clone()], None, false))
        .await
        .expect("first save");
    let loaded = store.load_process(&id).await.expect("load").expect("saved");
    assert_eq!(loaded.version, Version::new(1));
    assert_eq!(
        loaded.state.to_value().expect("valid"),
        json!({ "state": "awaiting", "n": 0 })
    );
    assert_eq!(
        (loaded.completed, loaded.last_position, loaded.updated_at),
        (false, Position::new(7), at(0))
    );
    assert_eq!(
        store
            .claim_due(at(0), 10, Duration::seconds(30))
            .await
            .expect("claim"),
        [attempt(&first, 1)],
        "the outbox is scheduled"
    );
    store
        .complete_scheduled(&[first.command.id])
        .await
        .expect("complete");

    let lost = store
        .save_process(save(0, vec![scheduled(&target, 0)], None, false))
        .await
        .expect_err("stale save");
    match lost {
        StoreError::Conflict {
            stream,
            expected,
            actual,
        } => {
            assert_eq!(
                (stream, expected, actual),
                (
                    id.clone(),
                    ExpectedVersion::Exact(Version::ZERO),
                    Version::new(1)
                )
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        store
            .claim_due(at(1), 10, Duration::seconds(30))
            .await
            .expect("claim")
            .is_empty(),
        "a failed save scheduled its outbox"
    );

    let timeout = CommandRecord::from_envelope(
        &second.command,
        at(15),
        Outcome::Accepted {
            version: Version::new(2),
            events: 0,
        },
    );
    store
        .save_process(save(1, Vec::new(), Some(timeout.clone()), true))
        .await
        .expect("save handling a timeout");
    assert_eq!(
        store.find_command(second.command.id).await.expect("find"),
        Some(timeout.clone()),
        "the handled command is recorded"
    );
    let dup = store
        .save_process(save(2, vec![scheduled(&target, 0)], Some(timeout), true))
        .await
        .expect_err("duplicate");
    assert!(dup.is_duplicate_command(), "got {dup:?}");
    let loaded = store.load_process(&id).await.expect("load").expect("saved");
    assert_eq!(
        (loaded.version, loaded.completed),
        (Version::new(2), true),
        "a duplicate save changed the instance"
    );
}

/// Every process instance and every scheduled command not completed can be listed, in id
/// order and by pages, so that a store can be copied.
pub async fn processes_and_schedules_can_be_listed(store: Arc<dyn ProcessesAndSchedule>) {
    let target = stream("order");
    let mut ids = Vec::new();
    let mut commands = Vec::new();
    for (n, name) in ["registration-b", "registration-a", "registration-c"]
        .into_iter()
        .enumerate()
    {
        let id = StreamId::new(name).expect("id");
        let outbox = vec![scheduled(&target, i64::try_from(n).expect("small"))];
        commands.extend(outbox.clone());
        store
            .save_process(ProcessSave {
                id: id.clone(),
                expected: Version::ZERO,
                state: Json::from(json!({ "n": n })),
                completed: n == 2,
                last_position: Position::new(10 + n as u64),
                outbox,
                cancel: Vec::new(),
                handled: None,
                saved_at: at(0),
            })
            .await
            .expect("save");
        ids.push(id);
    }
    let page = store.list_processes(None, 2).await.expect("list");
    let names: Vec<&str> = page.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        names,
        ["registration-a", "registration-b"],
        "by id, a page at a time"
    );
    assert_eq!(
        page[0],
        store
            .load_process(&page[0].id)
            .await
            .expect("load")
            .expect("saved")
    );
    let rest = store
        .list_processes(Some(&page[1].id), 10)
        .await
        .expect("list");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id.as_str(), "registration-c");
    assert!(rest[0].completed);
    assert_eq!(rest[0].last_position, Position::new(12));

    commands.sort_by_key(|c| c.command.id);
    assert_eq!(
        store.list_scheduled(None, 10).await.expect("list"),
        commands
    );
    let first = store.list_scheduled(None, 1).await.expect("list");
    let after = store
        .list_scheduled(Some(first[0].command.id), 10)
        .await
        .expect("list");
    assert_eq!(after, commands[1..], "by id, a page at a time");
    // Claimed ones are still listed (with their attempts); completed ones are not.
    let claimed = store
        .claim_due(at(0), 1, Duration::seconds(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let listed = store.list_scheduled(None, 10).await.expect("list");
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .any(|c| c.command.id == claimed[0].command.id && c.attempts == 1)
    );
    store
        .complete_scheduled(&[claimed[0].command.id])
        .await
        .expect("complete");
    assert_eq!(store.list_scheduled(None, 10).await.expect("list").len(), 2);
}

/// Concurrent dispatchers claiming due commands get disjoint sets, and together all of them;
/// concurrent saves of one process instance at one version: exactly one wins.
pub async fn concurrent_claims_and_process_saves_do_not_overlap(
    store: Arc<dyn ProcessesAndSchedule>,
) {
    let target = stream("order");
    let commands: Vec<ScheduledCommand> = (0..200)
        .map(|i| ScheduledCommand {
            command: CommandEnvelope {
                id: Uuid::new_v4(),
                target: target.clone(),
                command_type: "order.expire".into(),
                payload: Json::from(json!({ "i": i })),
                correlation_id: None,
                causation_id: None,
                headers: Default::default(),
            },
            due_at: at(0),
            attempts: 0,
        })
        .collect();
    store.schedule(commands.clone()).await.expect("schedule");
    let barrier = Arc::new(Barrier::new(8));
    let claimers: Vec<_> = (0..8)
        .map(|_| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                loop {
                    let batch = store
                        .claim_due(at(1), 7, Duration::minutes(5))
                        .await
                        .expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|c| c.command.id));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.expect("claimer"));
    }
    let unique: HashSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(
        unique.len(),
        claimed.len(),
        "a command was claimed twice within its lease"
    );
    assert_eq!(
        unique,
        commands.iter().map(|c| c.command.id).collect(),
        "every due command was claimed"
    );

    let id = stream("registration");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let savers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier, id) = (Arc::clone(&store), Arc::clone(&barrier), id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .save_process(ProcessSave {
                        id,
                        expected: Version::ZERO,
                        state: Json::from(json!({ "writer": w })),
                        completed: false,
                        last_position: Position::new(1),
                        outbox: Vec::new(),
                        cancel: Vec::new(),
                        handled: None,
                        saved_at: at(0),
                    })
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for saver in savers {
        match saver.await.expect("saver") {
            Ok(()) => wins += 1,
            Err(err) => assert!(err.is_conflict(), "expected a conflict, got {err:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one save wins a version");
    let saved = store.load_process(&id).await.expect("load").expect("saved");
    assert_eq!(saved.version, Version::new(1));
}

/// A conflicting process save reports the instance, the version the saver expected and the
/// version the store holds, for a new instance and for an existing one, ahead or behind; and
/// it writes nothing.
pub async fn process_conflicts_report_both_versions(store: Arc<dyn ProcessesAndSchedule>) {
    let id = stream("registration");
    let target = stream("order");
    let save = |expected: u64, n: u64| ProcessSave {
        id: id.clone(),
        expected: Version::new(expected),
        state: Json::from(json!({ "n": n })),
        completed: false,
        last_position: Position::new(n),
        outbox: vec![scheduled(&target, 0)],
        cancel: Vec::new(),
        handled: None,
        saved_at: at(0),
    };
    let conflict = |err: StoreError| match err {
        StoreError::Conflict {
            stream,
            expected,
            actual,
        } => (stream, expected, actual),
        other => panic!("expected a conflict, got {other:?}"),
    };

    let err = store
        .save_process(save(3, 1))
        .await
        .expect_err("a save expecting version 3 of a new instance");
    assert_eq!(
        conflict(err),
        (
            id.clone(),
            ExpectedVersion::Exact(Version::new(3)),
            Version::ZERO
        ),
        "a new instance is at version 0"
    );
    assert_eq!(store.load_process(&id).await.expect("load"), None);

    for (expected, n) in [(0, 1), (1, 2), (2, 3)] {
        store.save_process(save(expected, n)).await.expect("save");
    }
    for expected in [0, 1, 2, 4, 9] {
        let err = store
            .save_process(save(expected, 99))
            .await
            .expect_err("a stale or ahead save");
        assert_eq!(
            conflict(err),
            (
                id.clone(),
                ExpectedVersion::Exact(Version::new(expected)),
                Version::new(3)
            ),
            "a save expecting version {expected} of an instance at 3"
        );
    }
    let loaded = store.load_process(&id).await.expect("load").expect("saved");
    assert_eq!(
        (loaded.version, loaded.last_position),
        (Version::new(3), Position::new(3)),
        "conflicting saves changed the instance"
    );
    assert_eq!(
        store.list_scheduled(None, 100).await.expect("list").len(),
        3,
        "conflicting saves scheduled their outboxes"
    );
}

/// A save cancels scheduled commands in the same commit as its state and outbox: the ones
/// named are gone, unknown ids are ignored, and a save that conflicts cancels nothing.
pub async fn process_saves_cancel_scheduled_commands(store: Arc<dyn ProcessesAndSchedule>) {
    let id = stream("registration");
    let target = stream("order");
    let (expiry, reminder, later) = (
        scheduled(&target, 30),
        scheduled(&target, 10),
        scheduled(&target, 60),
    );
    let save = |expected: u64, outbox: Vec<ScheduledCommand>, cancel: Vec<Uuid>| ProcessSave {
        id: id.clone(),
        expected: Version::new(expected),
        state: Json::from(json!({ "n": expected })),
        completed: false,
        last_position: Position::new(expected + 1),
        outbox,
        cancel,
        handled: None,
        saved_at: at(0),
    };
    store
        .save_process(save(0, vec![expiry.clone(), reminder.clone()], Vec::new()))
        .await
        .expect("first save");
    let err = store
        .save_process(save(0, Vec::new(), vec![expiry.command.id]))
        .await
        .expect_err("a stale save");
    assert!(err.is_conflict(), "got {err:?}");
    let ids = |listed: Vec<ScheduledCommand>| -> HashSet<Uuid> {
        listed.into_iter().map(|c| c.command.id).collect()
    };
    assert_eq!(
        ids(store.list_scheduled(None, 10).await.expect("list")),
        HashSet::from([expiry.command.id, reminder.command.id]),
        "a conflicting save cancelled a command"
    );
    store
        .save_process(save(
            1,
            vec![later.clone()],
            vec![expiry.command.id, Uuid::new_v4()],
        ))
        .await
        .expect("a save that cancels the expiry and schedules another");
    assert_eq!(
        ids(store.list_scheduled(None, 10).await.expect("list")),
        HashSet::from([reminder.command.id, later.command.id]),
        "the cancelled command is gone, the new one scheduled, the others kept"
    );
    let due = store
        .claim_due(at(120), 10, Duration::seconds(30))
        .await
        .expect("claim");
    assert!(
        due.iter().all(|c| c.command.id != expiry.command.id),
        "a cancelled command was delivered"
    );
}
