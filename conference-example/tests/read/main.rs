//! The read models fed directly: duplicates, events out of order across streams, and events
//! that arrive before what they refer to.

use chrono::{DateTime, Duration, Utc};
use conference_example::domain::{
    AccessCode, Conference, ConferenceDetails, ConferenceEvent, ConferenceId, Order, OrderClosed,
    OrderEvent, OrderId, OrderLine, Owner, PersonalInfo, SeatAssignments, SeatAssignmentsEvent,
    SeatDelta, SeatPosition, SeatQuantity, SeatType, SeatTypeId, SeatsAvailability,
    SeatsAvailabilityEvent,
};
use conference_example::read::{ConferenceDirectory, DraftOrderState, OrderViews, PaymentStatus};
use cqrs_core::{Aggregate, DomainEvent, Metadata, NewEvent, Position, RecordedEvent, Version};
use rust_decimal::Decimal;

/// Records events as a store would, numbering positions globally.
#[derive(Default)]
struct Log {
    position: u64,
}

impl Log {
    fn record<A: Aggregate>(&mut self, id: &A::Id, version: u64, event: &A::Event) -> RecordedEvent
    where
        A::Event: DomainEvent,
    {
        self.position += 1;
        let (name, payload) = cqrs_core::encode_message(event).unwrap();
        RecordedEvent::from_new(
            NewEvent::new(name, payload).with_metadata(Metadata::new()),
            A::stream_id(id).unwrap(),
            Version::new(version),
            Position::new(self.position),
        )
    }
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn created() -> ConferenceEvent {
    ConferenceEvent::ConferenceCreated {
        slug: "devconf".into(),
        details: ConferenceDetails {
            name: "Devconf".into(),
            description: "Talks".into(),
            location: "Lisbon".into(),
            tagline: String::new(),
            twitter_search: String::new(),
            start_date: at(),
            end_date: at() + Duration::days(1),
        },
        owner: Owner {
            name: "Ana".into(),
            email: "ana@example.com".into(),
        },
        access_code: "ABCDEF".parse().unwrap(),
    }
}

fn full_pass(quantity: u32) -> SeatType {
    SeatType {
        name: "Full pass".into(),
        description: "Every talk".into(),
        quantity,
        price: Decimal::new(100, 0),
    }
}

fn changed(seat_type: SeatTypeId, delta: i64) -> SeatsAvailabilityEvent {
    SeatsAvailabilityEvent::AvailableSeatsChanged {
        seats: vec![SeatDelta { seat_type, delta }],
    }
}

#[test]
fn remaining_seats_count_each_availability_event_once() {
    let (conference, seat) = (ConferenceId::new(), SeatTypeId::new());
    let mut log = Log::default();
    let mut directory = ConferenceDirectory::default();
    let events = [
        log.record::<Conference>(&conference, 1, &created()),
        log.record::<Conference>(
            &conference,
            2,
            &ConferenceEvent::SeatCreated {
                seat_type: seat,
                seats: full_pass(10),
            },
        ),
        log.record::<SeatsAvailability>(&conference, 1, &changed(seat, 10)),
        log.record::<SeatsAvailability>(
            &conference,
            2,
            &SeatsAvailabilityEvent::SeatsReserved {
                reservation: OrderId::new(),
                details: vec![SeatQuantity::new(seat, 3)],
                changes: vec![SeatDelta {
                    seat_type: seat,
                    delta: -3,
                }],
            },
        ),
    ];
    for event in &events {
        directory.apply(event).unwrap();
    }
    // Redelivered: the seat events again, and an older one after a newer one.
    for event in [&events[3], &events[2], &events[3]] {
        directory.apply(event).unwrap();
    }
    let view = directory.by_slug("devconf").unwrap();
    assert_eq!(view.seat_types[&seat].available, Some(7));
    assert_eq!(view.seats_version, 2);
}

#[test]
fn seats_known_before_their_seat_type_or_conference_are_kept() {
    let (conference, seat) = (ConferenceId::new(), SeatTypeId::new());
    let mut log = Log::default();
    let mut directory = ConferenceDirectory::default();
    // The seats' stream is read first: the conference does not exist for the read model yet.
    directory
        .apply(&log.record::<SeatsAvailability>(&conference, 1, &changed(seat, 10)))
        .unwrap();
    directory
        .apply(&log.record::<Conference>(&conference, 1, &created()))
        .unwrap();
    let row = &directory.get(conference).unwrap().seat_types[&seat];
    assert_eq!(row.available, Some(10));
    assert!(!row.on_sale, "not on sale until its SeatCreated");
    directory
        .apply(&log.record::<Conference>(
            &conference,
            2,
            &ConferenceEvent::SeatCreated {
                seat_type: seat,
                seats: full_pass(10),
            },
        ))
        .unwrap();
    let row = &directory.get(conference).unwrap().seat_types[&seat];
    assert_eq!(
        (row.available, row.on_sale, row.name.as_str()),
        (Some(10), true, "Full pass")
    );
    // A duplicate of the conference's creation changes nothing.
    directory
        .apply(&log.record::<Conference>(&conference, 1, &created()))
        .unwrap();
    assert_eq!(directory.get(conference).unwrap().seat_types.len(), 1);
}

#[test]
fn order_views_ignore_duplicates_and_follow_the_order_to_its_seats() {
    let (conference, order, seat) = (ConferenceId::new(), OrderId::new(), SeatTypeId::new());
    let code: AccessCode = "QWERTY".parse().unwrap();
    let mut log = Log::default();
    let mut views = OrderViews::default();
    let ana = PersonalInfo {
        first_name: "Ana".into(),
        last_name: "Lima".into(),
        email: "ana@example.com".into(),
    };
    let line = OrderLine {
        seat_type: seat,
        unit_price: Decimal::new(100, 0),
        quantity: 2,
        line_total: Decimal::new(200, 0),
    };
    let order_events = [
        OrderEvent::OrderPlaced {
            conference,
            seats: vec![SeatQuantity::new(seat, 2)],
            reservation_expires_at: at(),
            seats_released_at: at(),
            access_code: code.clone(),
        },
        OrderEvent::OrderTotalsCalculated {
            lines: vec![line],
            total: Decimal::new(200, 0),
            is_free_of_charge: false,
        },
        OrderEvent::OrderReservationCompleted {
            reservation_expires_at: at(),
            seats: vec![SeatQuantity::new(seat, 2)],
        },
        OrderEvent::OrderRegistrantAssigned {
            registrant: ana.clone(),
            order: Some(order),
            conference: Some(conference),
            replaces: None,
        },
        OrderEvent::OrderConfirmed(OrderClosed {
            order: Some(order),
            conference: Some(conference),
            registrant: Some(ana.email.clone()),
        }),
    ];
    let recorded: Vec<RecordedEvent> = (1..)
        .zip(&order_events)
        .map(|(version, event)| log.record::<Order>(&order, version, event))
        .collect();
    views
        .apply(&log.record::<Conference>(
            &ConferenceId::new(),
            2,
            &ConferenceEvent::SeatCreated {
                seat_type: seat,
                seats: full_pass(10),
            },
        ))
        .unwrap();
    for event in recorded.iter().chain(&recorded) {
        views.apply(event).unwrap();
    }
    let assignments = log.record::<SeatAssignments>(
        &order,
        1,
        &SeatAssignmentsEvent::SeatAssignmentsCreated {
            seats: vec![
                SeatPosition {
                    position: 0,
                    seat_type: seat,
                },
                SeatPosition {
                    position: 1,
                    seat_type: seat,
                },
            ],
        },
    );
    views.apply(&assignments).unwrap();
    views.apply(&assignments).unwrap();
    views
        .apply(&log.record::<SeatAssignments>(
            &order,
            2,
            &SeatAssignmentsEvent::SeatAssigned {
                position: 1,
                seat_type: seat,
                attendee: ana.clone(),
            },
        ))
        .unwrap();

    let draft = views.draft(order).unwrap();
    assert_eq!(draft.state, DraftOrderState::Confirmed);
    assert_eq!(draft.items[0].reserved, 2);
    assert_eq!(views.locate("ana@EXAMPLE.com", &code).unwrap().order, order);
    let priced = views.priced(order).unwrap();
    assert_eq!(priced.total, Decimal::new(200, 0));
    assert_eq!(priced.lines.len(), 1);
    assert_eq!(priced.lines[0].description, "Full pass");
    assert_eq!(priced.reservation_expires_at, None);
    assert!(priced.has_assignments);
    let seats = views.seats(order).unwrap();
    assert_eq!(seats.len(), 2);
    assert_eq!(seats[1].attendee.as_ref(), Some(&ana));
    assert_eq!(seats[1].seat_name, "Full pass");
    let listed: Vec<_> = views.of_conference(conference).collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, PaymentStatus::Paid);
    assert_eq!(listed[0].registrant_name.as_deref(), Some("Lima, Ana"));
    assert_eq!(listed[0].seats.len(), 2);
}

#[test]
fn an_expired_order_leaves_the_lists_and_shows_as_expired() {
    let (conference, order, seat) = (ConferenceId::new(), OrderId::new(), SeatTypeId::new());
    let mut log = Log::default();
    let mut views = OrderViews::default();
    let placed = OrderEvent::OrderPlaced {
        conference,
        seats: vec![SeatQuantity::new(seat, 1)],
        reservation_expires_at: at(),
        seats_released_at: at(),
        access_code: "ZXCVBN".parse().unwrap(),
    };
    views
        .apply(&log.record::<Order>(&order, 1, &placed))
        .unwrap();
    assert_eq!(views.of_conference(conference).count(), 1);
    views
        .apply(&log.record::<Order>(&order, 2, &OrderEvent::OrderExpired(OrderClosed::default())))
        .unwrap();
    assert_eq!(views.draft(order).unwrap().state, DraftOrderState::Expired);
    assert!(views.priced(order).is_none());
    assert_eq!(views.of_conference(conference).count(), 0);
    assert_eq!(
        views.placed_in(conference).collect::<Vec<_>>(),
        [order],
        "its owner still sees its messages"
    );
}
