use conference_example::domain::{
    OrderId, PersonalInfo, SeatAssignments, SeatAssignmentsCommand as C, SeatAssignmentsError,
    SeatAssignmentsEvent as E, SeatPosition, SeatQuantity, SeatTypeId,
};
use cqrs_core::testing::Scenario;

fn person(first: &str, email: &str) -> PersonalInfo {
    PersonalInfo {
        first_name: first.into(),
        last_name: "Lima".into(),
        email: email.into(),
    }
}

fn two_seats(a: SeatTypeId, b: SeatTypeId) -> Scenario<SeatAssignments> {
    Scenario::new(OrderId::new()).given([E::SeatAssignmentsCreated {
        seats: vec![
            SeatPosition {
                position: 0,
                seat_type: a,
            },
            SeatPosition {
                position: 1,
                seat_type: b,
            },
        ],
    }])
}

#[test]
fn every_seat_of_the_order_gets_a_position_in_order() {
    let (a, b) = (SeatTypeId::new(), SeatTypeId::new());
    Scenario::<SeatAssignments>::new(OrderId::new())
        .when(C::Create {
            seats: vec![SeatQuantity::new(a, 2), SeatQuantity::new(b, 1)],
        })
        .then_events([E::SeatAssignmentsCreated {
            seats: vec![
                SeatPosition {
                    position: 0,
                    seat_type: a,
                },
                SeatPosition {
                    position: 1,
                    seat_type: a,
                },
                SeatPosition {
                    position: 2,
                    seat_type: b,
                },
            ],
        }]);
}

#[test]
fn creating_the_assignments_again_changes_nothing() {
    let (a, b) = (SeatTypeId::new(), SeatTypeId::new());
    two_seats(a, b)
        .when(C::Create {
            seats: vec![SeatQuantity::new(a, 5)],
        })
        .then_no_events();
}

#[test]
fn assigning_a_new_attendee_replaces_the_old_one() {
    let (a, b) = (SeatTypeId::new(), SeatTypeId::new());
    let ana = person("Ana", "ana@example.com");
    let bo = person("Bo", "bo@example.com");
    two_seats(a, b)
        .when(C::AssignSeat {
            position: 1,
            attendee: ana.clone(),
        })
        .then_events([E::SeatAssigned {
            position: 1,
            seat_type: b,
            attendee: ana.clone(),
        }]);
    two_seats(a, b)
        .given([E::SeatAssigned {
            position: 1,
            seat_type: b,
            attendee: ana,
        }])
        .when(C::AssignSeat {
            position: 1,
            attendee: bo.clone(),
        })
        .then_events([
            E::SeatUnassigned { position: 1 },
            E::SeatAssigned {
                position: 1,
                seat_type: b,
                attendee: bo.clone(),
            },
        ])
        .then_state(|s| assert_eq!(s.seats[&1].attendee.as_ref(), Some(&bo)));
}

#[test]
fn the_same_attendee_renamed_is_an_update_and_unchanged_is_nothing() {
    let (a, b) = (SeatTypeId::new(), SeatTypeId::new());
    let ana = person("Ana", "ana@example.com");
    let given = || {
        two_seats(a, b).given([E::SeatAssigned {
            position: 0,
            seat_type: a,
            attendee: ana.clone(),
        }])
    };
    let renamed = person("Anabela", "ANA@example.com");
    given()
        .when(C::AssignSeat {
            position: 0,
            attendee: renamed.clone(),
        })
        .then_events([E::SeatAssignmentUpdated {
            position: 0,
            attendee: renamed,
        }]);
    given()
        .when(C::AssignSeat {
            position: 0,
            attendee: person("ANA", "ana@example.com"),
        })
        .then_no_events();
}

#[test]
fn unassigning_frees_an_assigned_seat_only() {
    let (a, b) = (SeatTypeId::new(), SeatTypeId::new());
    two_seats(a, b)
        .given([E::SeatAssigned {
            position: 0,
            seat_type: a,
            attendee: person("Ana", "ana@example.com"),
        }])
        .when(C::UnassignSeat { position: 0 })
        .then_events([E::SeatUnassigned { position: 0 }])
        .then_state(|s| assert!(s.seats[&0].attendee.is_none()));
    two_seats(a, b)
        .when(C::UnassignSeat { position: 1 })
        .then_no_events();
}

#[test]
fn unknown_positions_and_bad_emails_are_refused() {
    let (a, b) = (SeatTypeId::new(), SeatTypeId::new());
    two_seats(a, b)
        .when(C::UnassignSeat { position: 7 })
        .then_error(SeatAssignmentsError::UnknownPosition(7));
    two_seats(a, b)
        .when(C::AssignSeat {
            position: 0,
            attendee: person("Ana", "nope"),
        })
        .then_error(SeatAssignmentsError::InvalidEmail("nope".into()));
    Scenario::<SeatAssignments>::new(OrderId::new())
        .when(C::UnassignSeat { position: 0 })
        .then_error(SeatAssignmentsError::NotFound);
}
