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

/// A parked command (a dead letter) keeps its command, attempts, reason and time; it is never
/// claimed, listed as scheduled nor counted in `next_due`, and parking it again, or an id that
/// is not scheduled, does nothing. Retrying puts it back, due when asked with its attempts from
/// zero; completing it removes it, as for any scheduled command.
pub async fn parked_commands_wait_for_retry_or_discard(store: Arc<dyn ScheduleStore>) {
    assert!(
        store.keeps_dead_letters(),
        "a store that parks commands says so (`keeps_dead_letters`), or a dispatcher drops them"
    );
    let target = stream("order");
    let (dead, alive, other) = (
        scheduled(&target, 1),
        scheduled(&target, 2),
        scheduled(&target, 3),
    );
    store
        .schedule(vec![dead.clone(), alive.clone(), other.clone()])
        .await
        .expect("schedule");
    let first = store
        .claim_due(at(1), 1, Duration::seconds(30))
        .await
        .expect("claim");
    assert_eq!(first, [attempt(&dead, 1)]);
    // A reason with what error chains hold: quotes, line breaks, any script.
    let reason = "gave up after 1 attempt: no handler for \"order.expire\"\n→ ünïcode";
    assert!(
        !store
            .park(dead.command.id, 2, reason, at(1))
            .await
            .expect("park with another claim's attempts"),
        "a dispatcher whose claim was taken over (the command was claimed again since) cannot \
         park it"
    );
    assert!(
        store
            .park(
                dead.command.id,
                1,
                reason,
                at(1) + Duration::microseconds(7)
            )
            .await
            .expect("park"),
        "a claimed command is parked"
    );
    assert!(
        !store
            .park(dead.command.id, 1, "again", at(9))
            .await
            .expect("park twice"),
        "parking a parked command does nothing"
    );
    assert!(
        !store
            .park(Uuid::new_v4(), 0, "unknown", at(9))
            .await
            .expect("park an unknown id"),
        "parking an id that is not scheduled does nothing"
    );
    let parked = store
        .find_parked(dead.command.id)
        .await
        .expect("find_parked")
        .expect("the dead letter is kept");
    assert_eq!(
        parked.scheduled,
        attempt(&dead, 1),
        "the dead letter keeps its command, due time and attempts"
    );
    assert_eq!(parked.reason, reason, "its reason comes back as given");
    assert_eq!(
        parked.parked_at,
        at(1) + Duration::microseconds(7),
        "and the time it was parked, to the microsecond"
    );
    assert_eq!(
        store.list_parked(None, 10).await.expect("list_parked"),
        std::slice::from_ref(&parked)
    );
    assert_eq!(
        store.count_parked(10).await.expect("count_parked"),
        1,
        "the parked commands are counted, and only they"
    );
    assert!(
        store
            .find_parked(alive.command.id)
            .await
            .expect("find_parked")
            .is_none(),
        "a command that is only scheduled is not parked"
    );

    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(at(2)),
        "a parked command is never due"
    );
    let listed: Vec<Uuid> = store
        .list_scheduled(None, 10)
        .await
        .expect("list")
        .iter()
        .map(|c| c.command.id)
        .collect();
    let mut waiting = vec![alive.command.id, other.command.id];
    waiting.sort();
    assert_eq!(listed, waiting, "parked commands are listed apart");
    let claimed = store
        .claim_due(at(60 * 24 * 365), 10, Duration::seconds(30))
        .await
        .expect("claim");
    assert_eq!(
        claimed,
        [attempt(&alive, 1), attempt(&other, 1)],
        "a parked command is never claimed, however late"
    );
    store
        .schedule(vec![dead.clone()])
        .await
        .expect("schedule the parked id again");
    assert!(
        store
            .find_parked(dead.command.id)
            .await
            .expect("find_parked")
            .is_some(),
        "scheduling a parked id again leaves it parked"
    );

    assert!(
        store
            .retry_parked(dead.command.id, at(5))
            .await
            .expect("retry"),
        "a parked command is retried"
    );
    assert!(
        !store
            .retry_parked(dead.command.id, at(5))
            .await
            .expect("retry twice"),
        "retrying a command that is not parked does nothing"
    );
    assert!(
        store.list_parked(None, 10).await.expect("list").is_empty(),
        "a retried command is no longer parked"
    );
    assert_eq!(
        store.count_parked(10).await.expect("count_parked"),
        0,
        "nor counted"
    );
    assert!(
        store
            .claim_due(at(4), 10, Duration::seconds(30))
            .await
            .expect("claim")
            .is_empty(),
        "a retried command waits for the due time it was given"
    );
    let mut retried = attempt(&dead, 1);
    retried.due_at = at(5);
    assert_eq!(
        store
            .claim_due(at(5), 10, Duration::seconds(30))
            .await
            .expect("claim"),
        [retried],
        "then comes back, its attempts counted from zero"
    );

    assert!(
        store
            .park(dead.command.id, 1, "failed again", at(6))
            .await
            .expect("park")
    );
    // Pages of parked commands go in id order, like the schedule's.
    let mut more: Vec<_> = (0..4).map(|i| scheduled(&target, 10 + i)).collect();
    store.schedule(more.clone()).await.expect("schedule");
    for c in &more {
        assert!(
            store
                .park(c.command.id, 0, "failed", at(20))
                .await
                .expect("park")
        );
    }
    more.push(dead.clone());
    more.sort_by_key(|c| c.command.id);
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_parked(after, 2).await.expect("list_parked");
        assert!(page.len() <= 2, "a page holds at most its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.scheduled.command.id);
        pages.extend(page.into_iter().map(|p| p.scheduled.command.id));
    }
    assert_eq!(
        pages,
        more.iter().map(|c| c.command.id).collect::<Vec<_>>(),
        "parked commands page in id order, each once"
    );
    for (up_to, counted) in [(10, 5), (5, 5), (3, 3), (0, 0)] {
        assert_eq!(
            store.count_parked(up_to).await.expect("count_parked"),
            counted,
            "a count goes no further than asked ({up_to})"
        );
    }

    let ids: Vec<Uuid> = more.iter().map(|c| c.command.id).collect();
    store.complete_scheduled(&ids).await.expect("discard");
    assert!(
        store.list_parked(None, 10).await.expect("list").is_empty(),
        "completing a parked command removes it"
    );
    assert!(
        store
            .find_parked(dead.command.id)
            .await
            .expect("find")
            .is_none()
    );
}
