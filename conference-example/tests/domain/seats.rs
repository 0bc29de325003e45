use conference_example::domain::{
    ConferenceId, OrderId, SeatDelta, SeatQuantity, SeatTypeId, SeatsAvailability,
    SeatsAvailabilityCommand as C, SeatsAvailabilityError, SeatsAvailabilityEvent as E,
};
use cqrs_core::testing::Scenario;

fn delta(seat_type: SeatTypeId, delta: i64) -> SeatDelta {
    SeatDelta { seat_type, delta }
}

fn added(seat_type: SeatTypeId, quantity: i64) -> E {
    E::AvailableSeatsChanged {
        seats: vec![delta(seat_type, quantity)],
    }
}

fn reserved(reservation: OrderId, details: Vec<SeatQuantity>, changes: Vec<SeatDelta>) -> E {
    E::SeatsReserved {
        reservation,
        details,
        changes,
    }
}

/// Ten seats of A remain.
fn ten_of(a: SeatTypeId) -> Scenario<SeatsAvailability> {
    Scenario::new(ConferenceId::new()).given([added(a, 10)])
}

#[test]
fn adding_seats_creates_the_conference_s_availability() {
    let a = SeatTypeId::new();
    Scenario::<SeatsAvailability>::new(ConferenceId::new())
        .when(C::AddSeats {
            seat_type: a,
            quantity: 10,
        })
        .then_events([added(a, 10)])
        .then_state(|s| assert_eq!(s.remaining[&a], 10));
}

#[test]
fn a_reservation_takes_what_it_asks_for_when_enough_remain() {
    let (a, r) = (SeatTypeId::new(), OrderId::new());
    ten_of(a)
        .when(C::MakeReservation {
            reservation: r,
            seats: vec![SeatQuantity::new(a, 4)],
        })
        .then_events([reserved(
            r,
            vec![SeatQuantity::new(a, 4)],
            vec![delta(a, -4)],
        )])
        .then_state(|s| assert_eq!(s.remaining[&a], 6));
}

#[test]
fn a_reservation_takes_what_is_left_when_not_enough_remain() {
    let (a, r) = (SeatTypeId::new(), OrderId::new());
    ten_of(a)
        .when(C::MakeReservation {
            reservation: r,
            seats: vec![SeatQuantity::new(a, 11)],
        })
        .then_events([reserved(
            r,
            vec![SeatQuantity::new(a, 10)],
            vec![delta(a, -10)],
        )]);
}

/// The CQRS Journey's worked examples: R holds 6 of A, so 4 remain; a new reservation under
/// the same id replaces it.
#[test]
fn a_second_reservation_under_one_id_replaces_the_first() {
    let (a, b, r) = (SeatTypeId::new(), SeatTypeId::new(), OrderId::new());
    let holding_six = || {
        Scenario::<SeatsAvailability>::new(ConferenceId::new()).given([
            added(a, 10),
            added(b, 10),
            reserved(r, vec![SeatQuantity::new(a, 6)], vec![delta(a, -6)]),
        ])
    };
    let cases = [
        (
            vec![SeatQuantity::new(a, 8)],
            vec![SeatQuantity::new(a, 8)],
            vec![delta(a, -2)],
        ),
        (
            vec![SeatQuantity::new(a, 12)],
            vec![SeatQuantity::new(a, 10)],
            vec![delta(a, -4)],
        ),
        (
            vec![SeatQuantity::new(a, 2)],
            vec![SeatQuantity::new(a, 2)],
            vec![delta(a, 4)],
        ),
    ];
    for (asked, details, changes) in cases {
        holding_six()
            .when(C::MakeReservation {
                reservation: r,
                seats: asked,
            })
            .then_events([reserved(r, details, changes)]);
    }
    // Switching types gives the old seats back.
    let result = holding_six().when(C::MakeReservation {
        reservation: r,
        seats: vec![SeatQuantity::new(b, 3)],
    });
    let events = result.result().unwrap().to_vec();
    let [
        E::SeatsReserved {
            details, changes, ..
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert_eq!(details, &vec![SeatQuantity::new(b, 3)]);
    let mut changes = changes.clone();
    changes.sort_by_key(|d| d.delta);
    assert_eq!(changes, vec![delta(b, -3), delta(a, 6)]);
}

#[test]
fn a_reservation_of_an_unknown_seat_type_is_refused_and_changes_nothing() {
    let (a, stranger) = (SeatTypeId::new(), SeatTypeId::new());
    ten_of(a)
        .when(C::MakeReservation {
            reservation: OrderId::new(),
            seats: vec![SeatQuantity::new(a, 1), SeatQuantity::new(stranger, 1)],
        })
        .then_error(SeatsAvailabilityError::UnknownSeatType(stranger));
}

#[test]
fn seats_removed_while_held_go_negative_and_nothing_more_is_reserved() {
    let (a, r, late) = (SeatTypeId::new(), OrderId::new(), OrderId::new());
    Scenario::<SeatsAvailability>::new(ConferenceId::new())
        .given([
            added(a, 5),
            reserved(r, vec![SeatQuantity::new(a, 5)], vec![delta(a, -5)]),
            E::AvailableSeatsChanged {
                seats: vec![delta(a, -2)],
            },
        ])
        .when(C::MakeReservation {
            reservation: late,
            seats: vec![SeatQuantity::new(a, 1)],
        })
        .then_events([reserved(late, vec![], vec![])])
        .then_state(|s| assert_eq!(s.remaining[&a], -2));
}

#[test]
fn cancelling_gives_the_seats_back_and_committing_keeps_them_sold() {
    let (a, r) = (SeatTypeId::new(), OrderId::new());
    let holding = || {
        ten_of(a).given([reserved(
            r,
            vec![SeatQuantity::new(a, 3)],
            vec![delta(a, -3)],
        )])
    };
    holding()
        .when(C::CancelReservation { reservation: r })
        .then_events([E::SeatsReservationCancelled {
            reservation: r,
            changes: vec![delta(a, 3)],
        }])
        .then_state(|s| {
            assert_eq!(s.remaining[&a], 10);
            assert!(s.pending.is_empty());
        });
    holding()
        .when(C::CommitReservation { reservation: r })
        .then_events([E::SeatsReservationCommitted { reservation: r }])
        .then_state(|s| {
            assert_eq!(s.remaining[&a], 7);
            assert!(s.pending.is_empty());
        });
}

#[test]
fn unknown_reservations_are_ignored_when_cancelled_or_committed() {
    let a = SeatTypeId::new();
    ten_of(a)
        .when(C::CancelReservation {
            reservation: OrderId::new(),
        })
        .then_no_events();
    ten_of(a)
        .when(C::CommitReservation {
            reservation: OrderId::new(),
        })
        .then_no_events();
}
