use chrono::{DateTime, Duration, Utc};
use conference_example::domain::{
    ConferenceId, Order, OrderCommand, OrderId, RegistrationError, RegistrationInput as I,
    RegistrationProcess, RegistrationState as S, RegistrationTimeout, SeatAssignments,
    SeatAssignmentsCommand, SeatQuantity, SeatTypeId, SeatsAvailability, SeatsAvailabilityCommand,
};
use cqrs_core::testing::ProcessScenario;
use cqrs_core::{Aggregate, Metadata, Outgoing, StreamId};
use uuid::Uuid;

struct Fixture {
    conference: ConferenceId,
    order: OrderId,
    seat: SeatTypeId,
    now: DateTime<Utc>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            conference: ConferenceId::new(),
            order: OrderId::new(),
            seat: SeatTypeId::new(),
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    fn stream(&self) -> StreamId {
        Order::stream_id(&self.order).unwrap()
    }

    fn expires(&self) -> DateTime<Utc> {
        self.now + Duration::minutes(15)
    }

    fn released(&self) -> DateTime<Utc> {
        self.now + Duration::minutes(29)
    }

    fn placed(&self, quantity: u32) -> I {
        I::OrderPlaced {
            conference: self.conference,
            seats: vec![SeatQuantity::new(self.seat, quantity)],
            reservation_expires_at: self.expires(),
            seats_released_at: self.released(),
        }
    }

    fn scenario(&self) -> ProcessScenario<RegistrationProcess> {
        ProcessScenario::new().at(self.now).in_stream(self.stream())
    }

    /// A registration awaiting its seats, as saved.
    fn in_state_value(&self, request: Uuid, expiry: Uuid) -> RegistrationProcess {
        RegistrationProcess {
            conference: self.conference,
            order: self.order,
            state: S::AwaitingReservationConfirmation,
            reservation_expires_at: self.expires(),
            seats: vec![SeatQuantity::new(self.seat, 2)],
            seat_reservation_command: request,
            expiration_command: Some(expiry),
            placed_at: Some(self.now),
            seats_released_at: Some(self.released()),
            first_reserved_at: None,
        }
    }

    /// A registration in `state`, whose last reservation request and expiry have known ids.
    fn in_state(
        &self,
        state: S,
        request: Uuid,
        expiry: Uuid,
    ) -> ProcessScenario<RegistrationProcess> {
        self.scenario().given_state(RegistrationProcess {
            conference: self.conference,
            order: self.order,
            state,
            reservation_expires_at: self.expires(),
            seats: vec![SeatQuantity::new(self.seat, 2)],
            seat_reservation_command: request,
            expiration_command: Some(expiry),
            placed_at: Some(self.now),
            seats_released_at: Some(self.released()),
            first_reserved_at: None,
        })
    }

    fn reserve(&self, quantity: u32) -> Outgoing {
        Outgoing::to::<SeatsAvailability>(
            &self.conference,
            &SeatsAvailabilityCommand::MakeReservation {
                reservation: self.order,
                seats: vec![SeatQuantity::new(self.seat, quantity)],
            },
        )
    }

    fn to_order(&self, command: &OrderCommand) -> Outgoing {
        Outgoing::to::<Order>(&self.order, command)
    }

    fn reserved_answer(&self, quantity: u32) -> I {
        I::SeatsReserved {
            reservation: self.order,
            details: vec![SeatQuantity::new(self.seat, quantity)],
        }
    }

    fn answer_to(&self, command: Uuid) -> Metadata {
        Metadata {
            command_id: Some(command),
            ..Metadata::at(self.now)
        }
    }
}

#[test]
fn a_placed_order_asks_for_its_seats_and_sets_the_release_deadline() {
    let f = Fixture::new();
    f.scenario()
        .when(f.placed(2))
        .then_sends([
            f.reserve(2),
            Outgoing::timeout::<RegistrationProcess>(
                &f.order.to_string(),
                &RegistrationTimeout::Expire,
            )
            .at(f.released()),
        ])
        .then_not_completed()
        .then_state(|p| {
            assert_eq!(p.state, S::AwaitingReservationConfirmation);
            assert_eq!(p.order, f.order);
        });
}

#[test]
fn an_order_first_seen_after_its_release_deadline_is_rejected_at_once() {
    let f = Fixture::new();
    f.scenario()
        .at(f.now + Duration::minutes(30))
        .when(f.placed(2))
        .then_sends([f.to_order(&OrderCommand::Reject)])
        .then_completed();
}

#[test]
fn an_order_first_seen_late_still_asks_for_its_seats() {
    // Queued for 20 minutes before the registration saw it: past the registrant's window as
    // counted from placement, but the window has not started yet.
    let f = Fixture::new();
    f.scenario()
        .at(f.now + Duration::minutes(20))
        .when_with(f.placed(2), Metadata::at(f.now))
        .then_sends([
            f.reserve(2),
            Outgoing::timeout::<RegistrationProcess>(
                &f.order.to_string(),
                &RegistrationTimeout::Expire,
            )
            .at(f.released()),
        ])
        .then_state(|p| {
            assert_eq!(p.placed_at, Some(f.now));
            assert_eq!(p.first_reserved_at, None);
        });
}

#[test]
fn the_first_answer_starts_the_window_over_and_moves_the_release() {
    let f = Fixture::new();
    let (request, expiry) = (Uuid::now_v7(), Uuid::now_v7());
    let late = f.now + Duration::minutes(20);
    let then = f
        .in_state(S::AwaitingReservationConfirmation, request, expiry)
        .at(late)
        .when_with(f.reserved_answer(1), f.answer_to(request))
        .then_sends([
            f.to_order(&OrderCommand::MarkSeatsAsReserved {
                seats: vec![SeatQuantity::new(f.seat, 1)],
                reservation_expires_at: late + Duration::minutes(15),
            }),
            Outgoing::timeout::<RegistrationProcess>(
                &f.order.to_string(),
                &RegistrationTimeout::Expire,
            )
            .at(late + Duration::minutes(29)),
        ])
        .then_cancels([expiry])
        .then_state(|p| {
            assert_eq!(p.reservation_expires_at, late + Duration::minutes(15));
            assert_eq!(p.seats_released_at, Some(late + Duration::minutes(29)));
            assert_eq!(p.first_reserved_at, Some(late));
            assert_ne!(p.expiration_command, Some(expiry));
        });
    let moved = then.sends()[1].id();
    // Seats changed later are reserved again under the moved deadline, not a new one.
    let reserved = RegistrationProcess {
        conference: f.conference,
        order: f.order,
        state: S::AwaitingReservationConfirmation,
        reservation_expires_at: late + Duration::minutes(15),
        seats: vec![SeatQuantity::new(f.seat, 1)],
        seat_reservation_command: request,
        expiration_command: Some(moved),
        placed_at: Some(f.now),
        seats_released_at: Some(late + Duration::minutes(29)),
        first_reserved_at: Some(late),
    };
    f.scenario()
        .given_state(reserved)
        .at(late + Duration::minutes(5))
        .when_with(f.reserved_answer(3), f.answer_to(request))
        .then_sends([f.to_order(&OrderCommand::MarkSeatsAsReserved {
            seats: vec![SeatQuantity::new(f.seat, 3)],
            reservation_expires_at: late + Duration::minutes(15),
        })])
        .then_cancels([])
        .then_state(|p| assert_eq!(p.expiration_command, Some(moved)));
}

#[test]
fn a_registration_saved_before_placement_times_were_kept_keeps_its_deadline() {
    let f = Fixture::new();
    let (request, expiry) = (Uuid::now_v7(), Uuid::now_v7());
    let old = RegistrationProcess {
        placed_at: None,
        seats_released_at: None,
        ..f.in_state_value(request, expiry)
    };
    f.scenario()
        .given_state(old)
        .at(f.now + Duration::minutes(5))
        .when_with(f.reserved_answer(1), f.answer_to(request))
        .then_sends([f.to_order(&OrderCommand::MarkSeatsAsReserved {
            seats: vec![SeatQuantity::new(f.seat, 1)],
            reservation_expires_at: f.expires(),
        })])
        .then_state(|p| assert_eq!(p.expiration_command, Some(expiry)));
}

#[test]
fn a_redelivered_placement_is_ignored_and_one_for_another_conference_refused() {
    let f = Fixture::new();
    f.scenario()
        .given([f.placed(2)])
        .when(f.placed(2))
        .then_ignored();
    f.scenario()
        .given([f.placed(2)])
        .when(I::OrderPlaced {
            conference: ConferenceId::new(),
            seats: vec![],
            reservation_expires_at: f.expires(),
            seats_released_at: f.released(),
        })
        .then_error(|e| matches!(e, RegistrationError::OtherConference { .. }));
}

#[test]
fn held_seats_are_marked_on_the_order() {
    let f = Fixture::new();
    let (request, expiry) = (Uuid::now_v7(), Uuid::now_v7());
    f.in_state(S::AwaitingReservationConfirmation, request, expiry)
        .when_with(f.reserved_answer(1), f.answer_to(request))
        .then_sends([f.to_order(&OrderCommand::MarkSeatsAsReserved {
            seats: vec![SeatQuantity::new(f.seat, 1)],
            reservation_expires_at: f.expires(),
        })])
        .then_state(|p| {
            assert_eq!(p.state, S::ReservationConfirmationReceived);
            assert_eq!(p.seats, vec![SeatQuantity::new(f.seat, 1)]);
        });
}

#[test]
fn an_answer_to_an_earlier_request_is_stale_and_a_repeated_one_a_duplicate() {
    let f = Fixture::new();
    let (request, expiry) = (Uuid::now_v7(), Uuid::now_v7());
    f.in_state(S::AwaitingReservationConfirmation, request, expiry)
        .when_with(f.reserved_answer(1), f.answer_to(Uuid::now_v7()))
        .then_ignored();
    f.in_state(S::ReservationConfirmationReceived, request, expiry)
        .when_with(f.reserved_answer(2), f.answer_to(request))
        .then_ignored();
    f.in_state(S::ReservationConfirmationReceived, request, expiry)
        .when_with(f.reserved_answer(2), f.answer_to(Uuid::now_v7()))
        .then_error(|e| matches!(e, RegistrationError::Unexpected { .. }));
}

#[test]
fn changed_seats_are_reserved_again_under_the_same_deadline() {
    let f = Fixture::new();
    let (request, expiry) = (Uuid::now_v7(), Uuid::now_v7());
    f.in_state(S::ReservationConfirmationReceived, request, expiry)
        .when(I::OrderUpdated {
            seats: vec![SeatQuantity::new(f.seat, 5)],
        })
        .then_sends([f.reserve(5)])
        .then_state(|p| {
            assert_eq!(p.state, S::AwaitingReservationConfirmation);
            assert_ne!(p.seat_reservation_command, request);
            assert_eq!(p.expiration_command, Some(expiry));
        });
    f.in_state(S::PaymentConfirmationReceived, request, expiry)
        .when(I::OrderUpdated { seats: vec![] })
        .then_error(|e| matches!(e, RegistrationError::Unexpected { .. }));
}

#[test]
fn a_completed_payment_confirms_the_order() {
    let f = Fixture::new();
    let (request, expiry) = (Uuid::now_v7(), Uuid::now_v7());
    f.in_state(S::ReservationConfirmationReceived, request, expiry)
        .when(I::PaymentCompleted { order: f.order })
        .then_sends([f.to_order(&OrderCommand::Confirm)])
        .then_state(|p| assert_eq!(p.state, S::PaymentConfirmationReceived));
    f.in_state(S::AwaitingReservationConfirmation, request, expiry)
        .when(I::PaymentCompleted { order: f.order })
        .then_error(|e| matches!(e, RegistrationError::Unexpected { .. }));
}

#[test]
fn a_confirmed_order_commits_its_seats_creates_its_assignments_and_finishes() {
    let f = Fixture::new();
    let (request, expiry) = (Uuid::now_v7(), Uuid::now_v7());
    // Paid, or free (the application confirms a free order without a payment).
    for state in [
        S::PaymentConfirmationReceived,
        S::ReservationConfirmationReceived,
    ] {
        f.in_state(state, request, expiry)
            .when(I::OrderConfirmed)
            .then_sends([
                Outgoing::to::<SeatsAvailability>(
                    &f.conference,
                    &SeatsAvailabilityCommand::CommitReservation {
                        reservation: f.order,
                    },
                ),
                Outgoing::to::<SeatAssignments>(
                    &f.order,
                    &SeatAssignmentsCommand::Create {
                        seats: vec![SeatQuantity::new(f.seat, 2)],
                    },
                ),
            ])
            .then_completed()
            .then_state(|p| assert_eq!(p.expiration_command, None));
    }
    f.in_state(S::AwaitingReservationConfirmation, request, expiry)
        .when(I::OrderConfirmed)
        .then_error(|e| matches!(e, RegistrationError::Unexpected { .. }));
}

#[test]
fn at_the_deadline_the_order_is_rejected_and_its_seats_released() {
    let f = Fixture::new();
    let (request, expiry) = (Uuid::now_v7(), Uuid::now_v7());
    f.in_state(S::ReservationConfirmationReceived, request, expiry)
        .when_timeout_with_id(RegistrationTimeout::Expire, expiry)
        .then_sends([
            f.to_order(&OrderCommand::Reject),
            Outgoing::to::<SeatsAvailability>(
                &f.conference,
                &SeatsAvailabilityCommand::CancelReservation {
                    reservation: f.order,
                },
            ),
        ])
        .then_completed();
    // Paid before the deadline, with the confirmation under way: the timeout changes nothing.
    f.in_state(S::PaymentConfirmationReceived, request, expiry)
        .when_timeout_with_id(RegistrationTimeout::Expire, expiry)
        .then_ignored();
    // A timeout that is not the current one is ignored.
    f.in_state(S::ReservationConfirmationReceived, request, expiry)
        .when_timeout_with_id(RegistrationTimeout::Expire, Uuid::now_v7())
        .then_ignored();
}

#[test]
fn events_of_other_streams_route_by_their_ids() {
    use cqrs_core::ProcessManager;
    let f = Fixture::new();
    let id = f.order.to_string();
    assert_eq!(
        RegistrationProcess::route(&f.placed(1), &f.stream()),
        Some(id.clone())
    );
    assert_eq!(
        RegistrationProcess::route(&f.placed(1), &StreamId::new("elsewhere-1").unwrap()),
        None
    );
    assert_eq!(
        RegistrationProcess::route(&f.reserved_answer(1), &StreamId::new("seats-x").unwrap()),
        Some(id.clone())
    );
    assert_eq!(
        RegistrationProcess::route(
            &I::PaymentCompleted { order: f.order },
            &StreamId::new("payment-x").unwrap()
        ),
        Some(id)
    );
}
