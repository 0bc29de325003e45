//! Back-pressure: the orders waiting for their seats are bounded, per conference and in all,
//! so that an order accepted is reserved soon and one conference's burst cannot queue the
//! others' orders behind it.

use std::sync::Arc;
use std::time::Duration;

use conference_example::app::{AppConfig, AppError, ConferenceApp};
use conference_example::domain::{ConferenceId, OrderId, SeatQuantity, SeatTypeId};
use conference_example::read::DraftOrderState;
use cqrs_core::{InMemoryEventStore, ManualClock};

async fn published(app: &ConferenceApp, slug: &str) -> (ConferenceId, SeatTypeId) {
    let (conference, seat_type, _) = app.publish_example(slug, 100).await.unwrap();
    (conference, seat_type)
}

/// Waits (a bounded time) until every order in `orders` shows in the read model in a state
/// `done` accepts.
async fn until(app: &ConferenceApp, orders: &[OrderId], done: impl Fn(DraftOrderState) -> bool) {
    for _ in 0..1_000 {
        if orders
            .iter()
            .all(|o| app.draft_order(*o).is_ok_and(|d| done(d.state)))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the orders did not get there in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_past_the_queue_bounds_are_turned_away_until_it_drains() {
    let clock = ManualClock::new("2026-05-04T09:00:00Z".parse().unwrap());
    let config = AppConfig {
        max_awaiting_per_conference: 3,
        max_awaiting: 5,
        ..AppConfig::default()
    };
    let app = ConferenceApp::new(
        Arc::new(InMemoryEventStore::new()),
        Arc::new(clock.clone()),
        config,
    );
    let (alpha, alpha_pass) = published(&app, "alpha").await;
    let (beta, beta_pass) = published(&app, "beta").await;
    // The read models follow the log, but the registration process does not run yet: every
    // order placed waits for its seats.
    app.start_read_models();
    let seat = |t| vec![SeatQuantity::new(t, 1)];
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(app.place_order(alpha, seat(alpha_pass)).await.unwrap());
    }
    until(&app, &waiting, |s| s == DraftOrderState::PendingReservation).await;
    let refused = app.place_order(alpha, seat(alpha_pass)).await;
    let Err(AppError::Overloaded {
        message,
        retry_after,
    }) = refused
    else {
        panic!("a fourth order for alpha waits behind three: {refused:?}");
    };
    assert!(
        message.contains("3 orders for this conference"),
        "{message}"
    );
    assert_eq!(retry_after, Duration::from_secs(2));

    // Another conference is not held up by alpha's queue, up to the bound of all queues.
    for _ in 0..2 {
        waiting.push(app.place_order(beta, seat(beta_pass)).await.unwrap());
    }
    until(&app, &waiting, |s| s == DraftOrderState::PendingReservation).await;
    assert!(matches!(
        app.place_order(beta, seat(beta_pass)).await,
        Err(AppError::Overloaded { .. })
    ));
    // What was turned away was never placed.
    assert_eq!(app.conference_orders(alpha).len(), 3);
    assert_eq!(app.conference_orders(beta).len(), 2);

    // Once the registration process has caught up, orders are taken again.
    let engine = app.start();
    until(&app, &waiting, |s| {
        s == DraftOrderState::ReservationCompleted
    })
    .await;
    let next = app.place_order(alpha, seat(alpha_pass)).await.unwrap();
    until(&app, &[next], |s| {
        s == DraftOrderState::ReservationCompleted
    })
    .await;
    engine.stop().await;
}
