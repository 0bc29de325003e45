//! `System`: one wiring for every part, settled step by step or spawned, read-your-writes.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use cqrs_core::{
    EventStore, ExpectedVersion, InMemoryEventStore, Json, ManualClock, MemoryProjection, NewEvent,
    StreamId, System, Upcasters,
};
use serde_json::json;

use crate::domain::{
    CONFERENCE, Order, OrderCommand, OrderStatus, Registration, Seats, SeatsCommand, WINDOW_MINUTES,
};

/// Seats left per the events, as a read model sees them.
fn seats_left() -> MemoryProjection<i64> {
    MemoryProjection::new("seats_left", 0_i64, |left: &mut i64, event| {
        let payload = event
            .payload
            .to_value()
            .map_err(cqrs_core::ProjectionError::from_error)?;
        match event.event_type.as_str() {
            "seats.added" => *left += payload["quantity"].as_i64().unwrap_or(0),
            "seats.reserved" => *left -= payload["seats"].as_i64().unwrap_or(0),
            "seats.cancelled" => *left += payload["seats"].as_i64().unwrap_or(0),
            _ => {}
        }
        Ok(())
    })
}

#[tokio::test]
async fn one_clock_reaches_every_part_and_timeouts_fire_on_it() {
    let clock = ManualClock::default();
    let system = System::builder(Arc::new(InMemoryEventStore::new()))
        .clock(Arc::new(clock.clone()))
        .build();
    let orders = system.repository::<Order>();
    let seats = system.repository::<Seats>();
    let _registration = system.process_manager::<Registration>();
    let left = system.blue_green(seats_left());

    seats
        .handle(&CONFERENCE.to_owned(), SeatsCommand::Add { quantity: 5 })
        .await
        .unwrap();
    let placed = orders
        .handle(&"o1".to_owned(), OrderCommand::Place { seats: 2 })
        .await
        .unwrap();
    let stored = system
        .storage()
        .read_stream(&placed.stream, cqrs_core::Version::START)
        .await
        .unwrap();
    assert_eq!(
        stored[0].metadata.recorded_at,
        cqrs_core::Clock::now(&clock),
        "the repository stamps with the system's clock"
    );
    system.settle().await.unwrap();
    assert_eq!(
        left.read(|n| *n),
        3,
        "the process reserved, the read model saw it"
    );

    clock.advance(Duration::minutes(WINDOW_MINUTES - 1));
    system.settle().await.unwrap();
    assert_eq!(
        left.read(|n| *n),
        3,
        "the expiry is not due on the manual clock yet"
    );
    clock.advance(Duration::minutes(2));
    system.settle().await.unwrap();
    assert_eq!(left.read(|n| *n), 5, "the expiry fired on the manual clock");
    let order = orders.load(&"o1".to_owned()).await.unwrap().state.unwrap();
    assert_eq!(order.status, OrderStatus::Rejected);
}

#[tokio::test]
async fn upcasters_given_once_reach_repositories_and_process_managers() {
    let store = Arc::new(InMemoryEventStore::new());
    // An older build called the event "SeatsAdded".
    store
        .append(
            &StreamId::new(format!("seats-{CONFERENCE}")).unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "SeatsAdded",
                Json::from(json!({ "quantity": 4 })),
            )],
        )
        .await
        .unwrap();
    let system = System::builder(store)
        .upcasters(Upcasters::new().rename("SeatsAdded", 1, "seats.added", 1))
        .build();
    let seats = system.repository::<Seats>();
    let orders = system.repository::<Order>();
    let _registration = system.process_manager::<Registration>();
    assert_eq!(
        seats
            .load(&CONFERENCE.to_owned())
            .await
            .unwrap()
            .state
            .unwrap()
            .available,
        4
    );
    orders
        .handle(&"o2".to_owned(), OrderCommand::Place { seats: 3 })
        .await
        .unwrap();
    system.settle().await.unwrap();
    assert_eq!(
        seats
            .load(&CONFERENCE.to_owned())
            .await
            .unwrap()
            .state
            .unwrap()
            .available,
        1,
        "the process reserved against the upcast seats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_system_is_read_your_writes_at_a_commands_position() {
    let system = System::builder(Arc::new(InMemoryEventStore::new())).build();
    let seats = system.repository::<Seats>();
    let orders = system.repository::<Order>();
    let _registration = system.process_manager::<Registration>();
    let left = system.blue_green(seats_left());
    let running = system.spawn();

    let added = seats
        .handle(&CONFERENCE.to_owned(), SeatsCommand::Add { quantity: 7 })
        .await
        .unwrap();
    let at = added.position.expect("the command appended an event");
    tokio::time::timeout(StdDuration::from_secs(10), running.wait_for(at))
        .await
        .expect("the read models reach the command's position")
        .unwrap();
    assert_eq!(left.read(|n| *n), 7, "what was just written is read");

    // The process manager and the dispatcher run too: a placed order gets its seats.
    orders
        .handle(&"o3".to_owned(), OrderCommand::Place { seats: 2 })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while left.read(|n| *n) != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reservation never came"
        );
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    running.stop().await;
    system
        .settle()
        .await
        .expect("a stopped system settles again");
}

#[test]
#[should_panic(expected = "before it settles or spawns")]
fn a_part_asked_for_after_settling_is_refused_with_the_reason() {
    let system = System::builder(Arc::new(InMemoryEventStore::new())).build();
    let _orders = system.repository::<Order>();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(system.settle()).unwrap();
    // The same repository again is fine; a new one would never receive its scheduled commands.
    let _again = system.repository::<Order>();
    let _seats = system.repository::<Seats>();
}
