use std::sync::Arc;

use chrono::Duration;
use serde_json::json;
use uuid::Uuid;

use crate::command::{CommandEnvelope, CommandRecord, Outcome};
use crate::event::{Json, StreamId};
use crate::store::{ProcessSave, ScheduledCommand, Storage, StoreError};
use crate::testing::conformance::fixtures::{at, stream};
use crate::version::{ExpectedVersion, Position, Version};

fn scheduled(target: &StreamId, minutes: i64) -> ScheduledCommand {
    ScheduledCommand {
        command: CommandEnvelope {
            id: Uuid::new_v4(),
            target: target.clone(),
            command_type: "order.expire".into(),
            payload: Json::from(json!({ "minutes": minutes })),
            correlation_id: Some(Uuid::new_v4()),
            causation_id: Some(Uuid::new_v4()),
            headers: [("h".to_owned(), "✓".to_owned())].into(),
        },
        due_at: at(minutes),
        attempts: 0,
    }
}

fn attempt(command: &ScheduledCommand, attempts: u32) -> ScheduledCommand {
    ScheduledCommand {
        attempts,
        ..command.clone()
    }
}

/// Scheduled commands become claimable at their due time, earliest first; a claim hides them
/// for the lease; an unfinished claim comes back when the lease ends; completing removes them;
/// scheduling an id twice keeps one.
pub async fn scheduled_commands_fire_when_due_and_once_claimed(store: Arc<dyn Storage>) {
    let target = stream("order");
    let (a, b, c) = (
        scheduled(&target, 1),
        scheduled(&target, 2),
        scheduled(&target, 5),
    );
    store
        .schedule(vec![c.clone(), a.clone(), b.clone()])
        .await
        .expect("schedule");
    store
        .schedule(vec![a.clone()])
        .await
        .expect("scheduling the same id again");
    assert_eq!(store.next_due().await.expect("next_due"), Some(at(1)));
    assert!(
        store
            .claim_due(at(0), 10, Duration::seconds(30))
            .await
            .expect("claim")
            .is_empty(),
        "nothing is due yet"
    );

    let claimed = store
        .claim_due(at(2), 10, Duration::seconds(30))
        .await
        .expect("claim");
    assert_eq!(
        claimed,
        [attempt(&a, 1), attempt(&b, 1)],
        "due commands come whole, earliest first, once, counting the claim"
    );
    assert!(
        store
            .claim_due(at(2), 10, Duration::seconds(30))
            .await
            .expect("claim")
            .is_empty(),
        "claimed commands are hidden"
    );
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(at(2) + Duration::seconds(30)),
        "a lease ends at claim time + lease"
    );

    store
        .complete_scheduled(&[a.command.id])
        .await
        .expect("complete");
    let again = store
        .claim_due(at(3), 10, Duration::seconds(30))
        .await
        .expect("claim");
    assert_eq!(
        again,
        [attempt(&b, 2)],
        "an unfinished claim is claimable after its lease, as a second attempt"
    );
    store
        .schedule(vec![scheduled(&target, 6)])
        .await
        .expect("schedule");
    let limited = store
        .claim_due(at(10), 2, Duration::seconds(30))
        .await
        .expect("claim");
    assert_eq!(limited.len(), 2, "claims respect the limit");
    assert_eq!(
        limited[..2],
        [attempt(&b, 3), attempt(&c, 1)],
        "the earliest due come first"
    );
    let last = store
        .claim_due(at(10), 2, Duration::seconds(30))
        .await
        .expect("claim");
    assert_eq!(last.len(), 1);
    store
        .complete_scheduled(&[b.command.id, c.command.id, last[0].command.id])
        .await
        .expect("complete");
    assert!(
        store
            .claim_due(at(60), 10, Duration::seconds(30))
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(store.next_due().await.expect("next_due"), None);
    store
        .complete_scheduled(&[Uuid::new_v4()])
        .await
        .expect("completing an unknown id is fine");
}

/// A process instance's state, its outbox and the command it handled commit together or not
/// at all; versions guard concurrent saves.
pub async fn process_state_and_outbox_commit_together(store: Arc<dyn Storage>) {
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
pub async fn processes_and_schedules_can_be_listed(store: Arc<dyn Storage>) {
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
