//! Group `schedule`: scheduled commands, claims and leases.

use std::sync::Arc;

use chrono::Duration;
use uuid::Uuid;

use crate::store::ScheduleStore;
use crate::testing::conformance::fixtures::{at, attempt, scheduled, stream};

/// Scheduled commands become claimable at their due time, earliest first; a claim hides them
/// for the lease; an unfinished claim comes back when the lease ends; completing removes them;
/// scheduling an id twice keeps one.
pub async fn scheduled_commands_fire_when_due_and_once_claimed(store: Arc<dyn ScheduleStore>) {
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

/// Claims take the earliest due first, to the microsecond, whatever order the commands were
/// scheduled in and however the limit cuts them; due times come back as scheduled, cut to the
/// microsecond.
pub async fn claims_come_earliest_due_first(store: Arc<dyn ScheduleStore>) {
    let target = stream("order");
    // 30 commands due a few microseconds apart (some with nanoseconds the store drops),
    // scheduled in a scrambled order, in two calls.
    let mut commands: Vec<_> = (0..30_i64)
        .map(|i| {
            let mut c = scheduled(&target, 0);
            c.due_at +=
                Duration::microseconds((i * 7) % 30) + Duration::nanoseconds(i * 13 % 1_000);
            c
        })
        .collect();
    let (first, second) = commands.split_at(17);
    store.schedule(second.to_vec()).await.expect("schedule");
    store.schedule(first.to_vec()).await.expect("schedule");
    for c in &mut commands {
        c.due_at =
            c.due_at - Duration::nanoseconds(i64::from(c.due_at.timestamp_subsec_nanos() % 1_000));
    }
    commands.sort_by_key(|c| c.due_at);
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(commands[0].due_at),
        "next_due is the earliest due time, cut to the microsecond"
    );
    let mut claimed = Vec::new();
    for limit in [1, 4, 7, 100] {
        let batch = store
            .claim_due(at(1), limit, Duration::minutes(5))
            .await
            .expect("claim");
        assert!(
            batch.len() <= limit,
            "a claim of {limit} returned {}",
            batch.len()
        );
        claimed.extend(batch);
    }
    let due: Vec<_> = claimed.iter().map(|c| c.due_at).collect();
    let want: Vec<_> = commands.iter().map(|c| c.due_at).collect();
    assert_eq!(
        due, want,
        "claims come earliest due first, across claims and within each"
    );
    let ids: std::collections::HashSet<Uuid> = claimed.iter().map(|c| c.command.id).collect();
    assert_eq!(ids.len(), commands.len(), "every command is claimed once");
    assert!(claimed.iter().all(|c| c.attempts == 1));
}

/// Scheduling an id that is already scheduled changes nothing: not its due time, not its
/// payload, not a claim in progress (it stays hidden for its lease) nor its attempts. An outbox
/// delivered twice must not fire a command twice or early.
pub async fn scheduling_an_id_again_changes_nothing(store: Arc<dyn ScheduleStore>) {
    let target = stream("order");
    let original = scheduled(&target, 5);
    store
        .schedule(vec![original.clone()])
        .await
        .expect("schedule");
    let mut earlier = scheduled(&target, 1);
    earlier.command.id = original.command.id;
    store
        .schedule(vec![earlier.clone()])
        .await
        .expect("scheduling the id again is not an error");
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(at(5)),
        "a second schedule of an id moved its due time"
    );
    assert!(
        store
            .claim_due(at(2), 10, Duration::minutes(1))
            .await
            .expect("claim")
            .is_empty(),
        "a second schedule of an id made it due early"
    );
    let claimed = store
        .claim_due(at(5), 10, Duration::minutes(1))
        .await
        .expect("claim");
    assert_eq!(
        claimed,
        [attempt(&original, 1)],
        "the first schedule stands"
    );

    store
        .schedule(vec![original.clone()])
        .await
        .expect("schedule while claimed");
    assert!(
        store
            .claim_due(at(5) + Duration::seconds(30), 10, Duration::minutes(1))
            .await
            .expect("claim")
            .is_empty(),
        "scheduling a claimed id again ended its lease"
    );
    let listed = store.list_scheduled(None, 10).await.expect("list");
    assert_eq!(
        listed.iter().map(|c| c.attempts).collect::<Vec<_>>(),
        [1],
        "scheduling a claimed id again reset its attempts"
    );
    let retried = store
        .claim_due(at(5) + Duration::minutes(2), 10, Duration::minutes(1))
        .await
        .expect("claim");
    assert_eq!(
        retried,
        [attempt(&original, 2)],
        "after the lease, the second attempt"
    );
}
