use std::sync::Arc;

use chrono::Duration;
use cqrs_core::testing::{ProcessScenario, Scenario};
use cqrs_core::{InMemoryEventStore, Metadata, Outgoing};

use crate::domain::{
    CONFERENCE, Order, OrderCommand, OrderError, OrderEvent, OrderStatus, Registration,
    RegistrationInput, RegistrationTimeout, Seats, SeatsCommand, WINDOW_MINUTES,
};

#[test]
fn placing_an_order() {
    Scenario::<Order>::new("o1".into())
        .when(OrderCommand::Place { seats: 2 })
        .then_events([OrderEvent::Placed {
            order: "o1".into(),
            seats: 2,
        }])
        .then_state(|o| assert_eq!(o.status, OrderStatus::Pending));
}

#[test]
fn a_confirmed_order_cannot_be_rejected() {
    Scenario::<Order>::new("o1".into())
        .given([
            OrderEvent::Placed {
                order: "o1".into(),
                seats: 2,
            },
            OrderEvent::Confirmed { order: "o1".into() },
        ])
        .when(OrderCommand::Reject)
        .then_error(OrderError::NotPending);
}

#[test]
#[should_panic(expected = "the command caused other events than expected")]
fn a_wrong_expectation_fails_the_test() {
    Scenario::<Order>::new("o1".into())
        .when(OrderCommand::Place { seats: 2 })
        .then_events([OrderEvent::Placed {
            order: "o1".into(),
            seats: 3,
        }]);
}

#[test]
#[should_panic(expected = "does not apply")]
fn a_broken_history_fails_the_test() {
    let _ = Scenario::<Order>::new("o1".into())
        .given([OrderEvent::Confirmed { order: "o1".into() }])
        .when(OrderCommand::Reject);
}

#[tokio::test]
async fn the_same_scenario_through_a_store() {
    let store = Arc::new(InMemoryEventStore::new());
    Scenario::<Seats>::new("c1".into())
        .given([crate::domain::SeatsEvent::Added { quantity: 1 }])
        .when_on(
            store,
            SeatsCommand::Reserve {
                order: "o1".into(),
                seats: 2,
            },
        )
        .await
        .then_error_matches(|e| matches!(e, crate::domain::SeatsError::NotEnough { available: 1 }));
}

#[test]
fn placing_an_order_reserves_seats_and_sets_a_timeout() {
    let scenario = ProcessScenario::<Registration>::new();
    let expiry = scenario.now() + Duration::minutes(WINDOW_MINUTES);
    scenario
        .when(RegistrationInput::OrderPlaced {
            order: "o1".into(),
            seats: 2,
        })
        .then_sends([
            Outgoing::to::<Seats>(
                &CONFERENCE.to_owned(),
                &SeatsCommand::Reserve {
                    order: "o1".into(),
                    seats: 2,
                },
            ),
            Outgoing::timeout::<Registration>("o1", &RegistrationTimeout::Expire).at(expiry),
        ])
        .then_not_completed()
        .then_state(|r| assert!(!r.reserved));
}

#[test]
fn the_expiry_rejects_and_releases() {
    let state = Registration {
        order: "o1".into(),
        reserved: true,
        expiry: uuid::Uuid::new_v4(),
    };
    let expiry = state.expiry;
    ProcessScenario::<Registration>::new()
        .given_state(state)
        .when_timeout_with_id(RegistrationTimeout::Expire, expiry)
        .then_sends([
            Outgoing::to::<Order>(&"o1".to_owned(), &OrderCommand::Reject),
            Outgoing::to::<Seats>(
                &CONFERENCE.to_owned(),
                &SeatsCommand::Cancel { order: "o1".into() },
            ),
        ])
        .then_completed();
}

#[test]
fn confirmation_cancels_the_expiry_and_completes() {
    let state = Registration {
        order: "o1".into(),
        reserved: true,
        expiry: uuid::Uuid::new_v4(),
    };
    let expiry = state.expiry;
    ProcessScenario::<Registration>::new()
        .given_state(state)
        .when(RegistrationInput::OrderConfirmed { order: "o1".into() })
        .then_cancels([expiry])
        .then_no_sends()
        .then_completed();
}

#[test]
fn a_stale_timeout_is_ignored_and_a_duplicate_reservation_refused() {
    let placed = RegistrationInput::OrderPlaced {
        order: "o1".into(),
        seats: 2,
    };
    ProcessScenario::<Registration>::new()
        .given([placed.clone()])
        .when_timeout(RegistrationTimeout::Expire)
        .then_ignored();
    ProcessScenario::<Registration>::new()
        .given([
            placed,
            RegistrationInput::SeatsReserved {
                order: "o1".into(),
                seats: 2,
            },
        ])
        .when_with(
            RegistrationInput::SeatsReserved {
                order: "o1".into(),
                seats: 2,
            },
            Metadata::new(),
        )
        .then_error(|_| true);
}
