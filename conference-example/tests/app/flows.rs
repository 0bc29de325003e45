use std::sync::Arc;

use chrono::Duration;
use conference_example::app::{AppError, PaymentStep, Rejection};
use conference_example::domain::{OrderError, PersonalInfo, SeatQuantity};
use conference_example::read::{DraftOrderState, PaymentStatus};
use cqrs_core::{InMemoryEventStore, LogQuery, Storage};
use rust_decimal::Decimal;

use crate::World;

fn ana() -> PersonalInfo {
    PersonalInfo {
        first_name: "Ana".into(),
        last_name: "Lima".into(),
        email: "ana@example.com".into(),
    }
}

async fn memory() -> Arc<dyn Storage> {
    Arc::new(InMemoryEventStore::new())
}

pub(crate) async fn paid_order(storage: Arc<dyn Storage>) {
    let w = World::new(storage).await;
    assert_eq!(w.available(w.full), 10);
    let order = w
        .app
        .place_order(w.conference, vec![SeatQuantity::new(w.full, 3)])
        .await
        .unwrap();
    w.app.settle().await.unwrap();
    let draft = w.app.draft_order(order).unwrap();
    assert_eq!(draft.state, DraftOrderState::ReservationCompleted);
    assert_eq!(w.available(w.full), 7);
    let priced = w.app.priced_order(order).unwrap();
    assert_eq!(priced.total, Decimal::new(59_700, 2));
    assert_eq!(priced.is_free_of_charge, Some(false));
    assert_eq!(priced.lines[0].description, "Full pass");

    w.app.assign_registrant(order, ana()).await.unwrap();
    let PaymentStep::Started(payment) = w.app.start_payment(order).await.unwrap() else {
        panic!("a paid order needs a payment");
    };
    w.app.complete_payment(payment).await.unwrap();
    w.app.settle().await.unwrap();

    assert_eq!(
        w.app.draft_order(order).unwrap().state,
        DraftOrderState::Confirmed
    );
    assert_eq!(
        w.app.priced_order(order).unwrap().reservation_expires_at,
        None
    );
    let seats = w.app.order_seats(order).unwrap();
    assert_eq!(seats.len(), 3);
    w.app.assign_seat(order, 1, Some(ana())).await.unwrap();
    w.app.settle().await.unwrap();
    assert_eq!(w.app.order_seats(order).unwrap()[1].attendee, Some(ana()));
    let listed = w.app.conference_orders(w.conference);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, PaymentStatus::Paid);
    assert_eq!(listed[0].registrant_name.as_deref(), Some("Lima, Ana"));
    // Sold seats stay sold, even after the deadline passes.
    w.clock.advance(Duration::hours(1));
    w.app.settle().await.unwrap();
    assert_eq!(w.available(w.full), 7);
    assert_eq!(
        w.app.draft_order(order).unwrap().state,
        DraftOrderState::Confirmed
    );
    // The registrant finds the order with email and access code.
    let found = w
        .app
        .locate_order("ANA@example.com", &draft.access_code)
        .unwrap();
    assert_eq!(found.order, order);
}

pub(crate) async fn zero_cost_order(storage: Arc<dyn Storage>) {
    let w = World::new(storage).await;
    let order = w
        .app
        .place_order(w.conference, vec![SeatQuantity::new(w.party, 2)])
        .await
        .unwrap();
    w.app.settle().await.unwrap();
    assert_eq!(
        w.app.priced_order(order).unwrap().is_free_of_charge,
        Some(true)
    );
    w.app.assign_registrant(order, ana()).await.unwrap();
    assert_eq!(
        w.app.start_payment(order).await.unwrap(),
        PaymentStep::ConfirmedFree
    );
    w.app.settle().await.unwrap();
    assert_eq!(
        w.app.draft_order(order).unwrap().state,
        DraftOrderState::Confirmed
    );
    assert_eq!(w.app.order_seats(order).unwrap().len(), 2);
    assert_eq!(w.available(w.party), 3);
    // No payment was ever started.
    let payments = w
        .app
        .log(&LogQuery::new().with_types(["payments.payment_initiated"]))
        .await
        .unwrap();
    assert!(payments.is_empty());
    // A mixed order still pays.
    let mixed = w
        .app
        .place_order(
            w.conference,
            vec![SeatQuantity::new(w.party, 1), SeatQuantity::new(w.full, 1)],
        )
        .await
        .unwrap();
    w.app.settle().await.unwrap();
    assert!(matches!(
        w.app.start_payment(mixed).await.unwrap(),
        PaymentStep::Started(_)
    ));
}

pub(crate) async fn partial_reservation(storage: Arc<dyn Storage>) {
    let w = World::new(storage).await;
    let order = w
        .app
        .place_order(w.conference, vec![SeatQuantity::new(w.party, 8)])
        .await
        .unwrap();
    w.app.settle().await.unwrap();
    let draft = w.app.draft_order(order).unwrap();
    assert_eq!(draft.state, DraftOrderState::PartiallyReserved);
    assert_eq!(draft.items[0].requested, 8);
    assert_eq!(draft.items[0].reserved, 5);
    assert_eq!(w.available(w.party), 0);
    // The registrant takes fewer: the reservation is replaced and the rest goes back.
    w.app
        .update_order(order, vec![SeatQuantity::new(w.party, 2)])
        .await
        .unwrap();
    w.app.settle().await.unwrap();
    assert_eq!(
        w.app.draft_order(order).unwrap().state,
        DraftOrderState::ReservationCompleted
    );
    assert_eq!(w.available(w.party), 3);
}

pub(crate) async fn expiry(storage: Arc<dyn Storage>) {
    let w = World::new(storage).await;
    let order = w
        .app
        .place_order(w.conference, vec![SeatQuantity::new(w.full, 4)])
        .await
        .unwrap();
    w.app.settle().await.unwrap();
    w.app.assign_registrant(order, ana()).await.unwrap();
    let PaymentStep::Started(payment) = w.app.start_payment(order).await.unwrap() else {
        panic!("a paid order needs a payment");
    };
    assert_eq!(w.available(w.full), 6);
    // At 15 minutes the registrant's window closes, but the seats stay held for the buffer.
    w.clock.advance(Duration::minutes(16));
    w.app.settle().await.unwrap();
    assert_eq!(w.available(w.full), 6);
    // At 29 minutes the order is rejected and its seats are released.
    w.clock.advance(Duration::minutes(14));
    w.app.settle().await.unwrap();
    assert_eq!(w.available(w.full), 10);
    assert_eq!(
        w.app.draft_order(order).unwrap().state,
        DraftOrderState::Expired
    );
    assert!(w.app.priced_order(order).is_none());
    assert!(w.app.conference_orders(w.conference).is_empty());
    // A payment completing now never confirms the order.
    w.app.complete_payment(payment).await.unwrap();
    w.app.settle().await.unwrap();
    assert_eq!(
        w.app.draft_order(order).unwrap().state,
        DraftOrderState::Expired
    );
    assert_eq!(w.available(w.full), 10);
    assert!(matches!(
        w.app.start_payment(order).await,
        Err(AppError::Rejected(Rejection::Order(OrderError::Expired)))
    ));
}

#[tokio::test]
async fn paid_order_on_memory() {
    paid_order(memory().await).await;
}

#[tokio::test]
async fn zero_cost_order_on_memory() {
    zero_cost_order(memory().await).await;
}

#[tokio::test]
async fn partial_reservation_on_memory() {
    partial_reservation(memory().await).await;
}

#[tokio::test]
async fn expiry_on_memory() {
    expiry(memory().await).await;
}

async fn sqlite() -> (Arc<dyn Storage>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = cqrs_store_sqlite::SqliteEventStore::open(dir.path().join("conference.db"))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

#[tokio::test]
async fn paid_order_on_sqlite() {
    let (storage, _dir) = sqlite().await;
    paid_order(storage).await;
}

#[tokio::test]
async fn zero_cost_order_on_sqlite() {
    let (storage, _dir) = sqlite().await;
    zero_cost_order(storage).await;
}

#[tokio::test]
async fn partial_reservation_on_sqlite() {
    let (storage, _dir) = sqlite().await;
    partial_reservation(storage).await;
}

#[tokio::test]
async fn expiry_on_sqlite() {
    let (storage, _dir) = sqlite().await;
    expiry(storage).await;
}

async fn postgres() -> Option<Arc<dyn Storage>> {
    cqrs_store_postgres::testing::fresh_store()
        .await
        .map(|store| Arc::new(store) as Arc<dyn Storage>)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_order_on_postgres() {
    if let Some(storage) = postgres().await {
        paid_order(storage).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_cost_order_on_postgres() {
    if let Some(storage) = postgres().await {
        zero_cost_order(storage).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_reservation_on_postgres() {
    if let Some(storage) = postgres().await {
        partial_reservation(storage).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_on_postgres() {
    if let Some(storage) = postgres().await {
        expiry(storage).await;
    }
}
