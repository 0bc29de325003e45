//! The V1 → V2 upgrade on real stores: a V1 store made as data, migrated SQLite→SQLite,
//! SQLite→PostgreSQL and PostgreSQL→PostgreSQL, verified event by event, aggregate by
//! aggregate and read model by read model; the app then runs on it without processing
//! history again; a killed migration resumes; a bad one leaves the source untouched.

mod under_load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use conference_example::app::{AppConfig, ConferenceApp, open_storage};
use conference_example::domain::{Conference, SeatQuantity};
use conference_example::migrate::{
    Management, V1Options, V1Summary, make_v1, process_checkpoints, upgrade, verify_upgrade,
};
use conference_example::read::DraftOrderState;
use cqrs_core::migrate::MigrationError;
use cqrs_core::{Aggregate, Position, Storage, SystemClock};
use cqrs_store_postgres::testing::{Durability, server};

const EVENTS: u64 = 3_000;

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Storage> {
    open_storage(&format!("sqlite://{}", dir.path().join(name).display()))
        .await
        .unwrap()
}

async fn postgres() -> Option<Arc<dyn Storage>> {
    let pg = server(Durability::Fast)?;
    let url = pg.fresh_database().await;
    Some(open_storage(&url).await.unwrap())
}

async fn v1(storage: &Arc<dyn Storage>) -> V1Summary {
    let made = make_v1(
        Arc::clone(storage),
        V1Options {
            events: EVENTS,
            ..V1Options::default()
        },
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(made.events >= EVENTS);
    assert!(made.confirmed > 0 && made.expired > 0, "{made:?}");
    made
}

/// The store's head once it delivers everything committed so far.
async fn settled(storage: &Arc<dyn Storage>) -> Position {
    let committed = storage.last_committed().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = storage.head().await.unwrap();
        if head >= committed {
            return head;
        }
        assert!(
            Instant::now() < deadline,
            "the head stayed at {head}, behind the last commit at {committed}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Migrates, verifies, and runs the app on the result.
async fn upgrade_and_check(from: &Arc<dyn Storage>, to: &Arc<dyn Storage>, made: &V1Summary) {
    // A gap-safe store (PostgreSQL) delivers its last commits only once every older
    // transaction on the server has ended, other tests' included: wait until it delivers them
    // all, so that the count below is the whole log. What was committed, not what is
    // delivered yet, says whether the migration wrote to its source.
    let source_head = settled(from).await;
    // PostgreSQL positions may have gaps: count the events.
    let count = from
        .read_all(Position::START, 1_000_000)
        .await
        .unwrap()
        .len() as u64;
    let migration = upgrade(from, &made.management).await.unwrap();
    let report = migration
        .run(from.as_ref(), to.as_ref(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.events_read, count);
    assert_eq!(report.events_written, count);
    assert!(report.prelude_written > 0);
    assert_eq!(
        from.last_committed().await.unwrap(),
        source_head,
        "the source is untouched"
    );

    let verified = verify_upgrade(from, to, &made.management).await.unwrap();
    assert!(verified.is_identical(), "{verified:?}");
    assert!(verified.aggregates > made.orders);

    // The process managers' checkpoints came along: starting the app processes nothing old.
    for name in process_checkpoints(to) {
        assert!(
            to.load_checkpoint(&name).await.unwrap().is_some(),
            "{name} carried"
        );
    }
    let head = to.head().await.unwrap();
    let app = ConferenceApp::new(Arc::clone(to), Arc::new(SystemClock), AppConfig::default());
    app.settle().await.unwrap();
    assert_eq!(to.head().await.unwrap(), head, "no history processed again");

    // The conferences V1 never stored as events are there, with the seats left.
    let managed = &made.management.conferences[0];
    let view = app.conference_by_slug(&managed.slug).expect("re-created");
    assert!(view.published);
    assert_eq!(view.seat_types.len(), managed.seat_types.len());
    let general = managed.seat_types[0].id;
    let left = view.seat_types[&general].available.unwrap();
    assert!(
        left < i64::from(managed.seat_types[0].seats.quantity),
        "V1 sales count"
    );

    // And it takes orders.
    let order = app
        .place_order(view.id, vec![SeatQuantity::new(general, 2)])
        .await
        .unwrap();
    app.settle().await.unwrap();
    let draft = app.draft_order(order).unwrap();
    assert_eq!(draft.state, DraftOrderState::ReservationCompleted);
    assert_eq!(
        app.conference(view.id).unwrap().seat_types[&general]
            .available
            .unwrap(),
        left - 2
    );
    // V1 orders read as today's: found by email and access code, priced, with their seats.
    let paid = app
        .conference_orders(view.id)
        .into_iter()
        .find(|o| o.status == conference_example::read::PaymentStatus::Paid)
        .expect("a paid V1 order");
    assert!(app.order_seats(paid.order).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let from = sqlite(&dir, "v1.db").await;
    let made = v1(&from).await;
    // V1 stored no conference events.
    let all = from.read_all(Position::START, 100_000).await.unwrap();
    assert!(all.iter().all(|e| e.stream.category() != Conference::TYPE));
    assert!(
        all.iter()
            .any(|e| e.event_type == "registration.order_payment_confirmed")
    );
    assert!(all.iter().all(|e| e.metadata.correlation_id.is_none()));
    let to = sqlite(&dir, "v2.db").await;
    upgrade_and_check(&from, &to, &made).await;
    // Correlation ids were backfilled: an order's flow crosses its streams.
    let migrated = to.read_all(Position::START, 100_000).await.unwrap();
    let seats = migrated
        .iter()
        .find(|e| e.event_type == "registration.seats_reserved")
        .unwrap();
    let order = seats.payload.to_value().unwrap()["reservation"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    assert_eq!(seats.metadata.correlation_id, Some(order));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres() {
    let Some(to) = postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let from = sqlite(&dir, "v1.db").await;
    let made = v1(&from).await;
    upgrade_and_check(&from, &to, &made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_postgres() {
    let (Some(from), Some(to)) = (postgres().await, postgres().await) else {
        return;
    };
    let made = v1(&from).await;
    upgrade_and_check(&from, &to, &made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_migration_resumes_to_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let from = sqlite(&dir, "v1.db").await;
    let made = v1(&from).await;
    let to = sqlite(&dir, "v2.db").await;
    let migration = upgrade(&from, &made.management)
        .await
        .unwrap()
        .with_batch(100);
    // Killed after its fifth batch: the progress report ends the task there, wherever the
    // scheduler is (the stores answer so fast that a kill sent from another task can arrive
    // after the last batch).
    let task = {
        let (from, to, migration) = (Arc::clone(&from), Arc::clone(&to), migration.clone());
        tokio::spawn(async move {
            let mut reports = 0;
            migration
                .run(from.as_ref(), to.as_ref(), &mut move |_| {
                    reports += 1;
                    assert!(reports < 5, "killed after the fifth batch");
                })
                .await
        })
    };
    assert!(
        task.await.unwrap_err().is_panic(),
        "the migration was killed"
    );
    let partial = to.head().await.unwrap();
    assert!(partial.get() > 0 && partial < from.head().await.unwrap());

    // Running again refuses the half-filled target and says what to do.
    let err = migration
        .run(from.as_ref(), to.as_ref(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrationError::TargetNotEmpty { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("resume"), "{err}");

    let report = migration
        .resume(from.as_ref(), to.as_ref(), &mut |_| {})
        .await
        .unwrap();
    assert!(
        report.started_at.get() > 1,
        "it went on, not from the start"
    );
    let verified = verify_upgrade(&from, &to, &made.management).await.unwrap();
    assert!(verified.is_identical(), "{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_management_file_or_a_used_target_fails_safe() {
    let dir = tempfile::tempdir().unwrap();
    let from = sqlite(&dir, "v1.db").await;
    let made = v1(&from).await;
    let head = from.head().await.unwrap();
    // Into a store that holds data: refused, nothing written anywhere.
    let used = sqlite(&dir, "used.db").await;
    let _ = v1(&used).await;
    let used_head = used.head().await.unwrap();
    let migration = upgrade(&from, &made.management).await.unwrap();
    assert!(
        migration
            .run(from.as_ref(), used.as_ref(), &mut |_| {})
            .await
            .is_err()
    );
    assert_eq!(used.head().await.unwrap(), used_head);
    assert_eq!(from.head().await.unwrap(), head);
    // Verifying against the wrong management rows finds the difference.
    let to = sqlite(&dir, "v2.db").await;
    migration
        .run(from.as_ref(), to.as_ref(), &mut |_| {})
        .await
        .unwrap();
    let wrong = Management::default();
    let verified = verify_upgrade(&from, &to, &wrong).await.unwrap();
    assert!(!verified.is_identical());
}
