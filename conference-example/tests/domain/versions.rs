//! The V1 shapes, read through the upcasters one by one, and the property that upcasting
//! an event already in today's shape changes nothing.

use chrono::{DateTime, Duration, TimeZone, Utc};
use conference_example::domain::versions::{self, V1_ORDER_PAYMENT_CONFIRMED, to_v1, upcasters};
use conference_example::domain::{
    AccessCode, ConferenceId, OrderClosed, OrderEvent, OrderId, OrderLine, PersonalInfo,
    SeatQuantity, SeatTypeId,
};
use cqrs_core::{DomainEvent, Json, NewEvent, Position, RecordedEvent, StreamId, Version};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn stored(event_type: &str, schema_version: u16, payload: Value) -> RecordedEvent {
    RecordedEvent::from_new(
        NewEvent::new(event_type, Json::encode(&payload).unwrap())
            .with_schema_version(schema_version),
        StreamId::new("order-0190a5d2-0000-7000-8000-000000000001").unwrap(),
        Version::new(3),
        Position::new(77),
    )
}

fn read(event: &RecordedEvent) -> Vec<OrderEvent> {
    upcasters().decode::<OrderEvent>(event).unwrap().collect()
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2012, 5, 2, 10, minute, 0).unwrap()
}

#[test]
fn v1_order_payment_confirmed_reads_as_order_confirmed() {
    let event = stored(V1_ORDER_PAYMENT_CONFIRMED, 1, Value::Null);
    assert_eq!(
        read(&event),
        [OrderEvent::OrderConfirmed(OrderClosed::default())]
    );
}

#[test]
fn v1_totals_gain_is_free_of_charge_from_the_total() {
    let seat = SeatTypeId::new();
    let line =
        json!({"seat_type": seat, "unit_price": "100.00", "quantity": 2, "line_total": "200.00"});
    let paid = stored(
        versions::ORDER_TOTALS_CALCULATED,
        1,
        json!({"lines": [line], "total": "200.00"}),
    );
    let [
        OrderEvent::OrderTotalsCalculated {
            total,
            is_free_of_charge,
            lines,
        },
    ] = &read(&paid)[..]
    else {
        panic!("one totals event");
    };
    assert_eq!(*total, Decimal::new(20_000, 2));
    assert!(!is_free_of_charge);
    assert_eq!(lines.len(), 1);
    let free_line = json!({"seat_type": seat, "unit_price": "0", "quantity": 2, "line_total": "0"});
    let empty = stored(
        versions::ORDER_TOTALS_CALCULATED,
        1,
        json!({"lines": [], "total": "0"}),
    );
    assert!(
        matches!(
            read(&empty)[..],
            [OrderEvent::OrderTotalsCalculated {
                is_free_of_charge: false,
                ..
            }]
        ),
        "an order holding nothing is not free"
    );
    let free = stored(
        versions::ORDER_TOTALS_CALCULATED,
        1,
        json!({"lines": [free_line], "total": "0"}),
    );
    assert!(matches!(
        read(&free)[..],
        [OrderEvent::OrderTotalsCalculated {
            is_free_of_charge: true,
            ..
        }]
    ));
}

#[test]
fn v1_order_placed_gains_the_release_deadline_v1_used() {
    let conference = ConferenceId::new();
    let event = stored(
        versions::ORDER_PLACED,
        1,
        json!({
            "conference": conference,
            "seats": [],
            "reservation_expires_at": at(15),
            "access_code": "ABCDEF",
        }),
    );
    let [
        OrderEvent::OrderPlaced {
            reservation_expires_at,
            seats_released_at,
            ..
        },
    ] = &read(&event)[..]
    else {
        panic!("one placed event");
    };
    assert_eq!(*reservation_expires_at, at(15));
    assert_eq!(
        *seats_released_at,
        at(29),
        "15 + 14 minutes, as V1 released them"
    );
}

#[test]
fn bad_v1_rows_are_typed_errors_naming_the_position() {
    let event = stored(versions::ORDER_PLACED, 1, json!({"seats": []}));
    let err = upcasters().decode::<OrderEvent>(&event).err().unwrap();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(text.contains("77"), "{text}");
    assert!(text.contains("reservation_expires_at"), "{text}");
    let event = stored(versions::ORDER_TOTALS_CALCULATED, 1, json!("not an object"));
    assert!(upcasters().decode::<OrderEvent>(&event).is_err());
}

fn order_event() -> impl Strategy<Value = OrderEvent> {
    let when = (0i64..10_000_000).prop_map(|s| at(0) + Duration::seconds(s));
    let seats = proptest::collection::vec(
        (0u32..50).prop_map(|q| SeatQuantity::new(SeatTypeId::new(), q)),
        0..4,
    );
    let money = (0i64..5_000_000).prop_map(|c| Decimal::new(c, 2));
    let person =
        ("[A-Z][a-z]{1,8}", "[A-Z][a-z]{1,8}", "[a-z]{1,8}").prop_map(|(f, l, e)| PersonalInfo {
            first_name: f,
            last_name: l,
            email: format!("{e}@example.com"),
        });
    prop_oneof![
        (seats.clone(), when.clone(), 0i64..3_600).prop_map(|(seats, expires, buffer)| {
            OrderEvent::OrderPlaced {
                conference: ConferenceId::new(),
                seats,
                reservation_expires_at: expires,
                seats_released_at: expires + Duration::seconds(buffer),
                access_code: AccessCode::generate(),
            }
        }),
        seats
            .clone()
            .prop_map(|seats| OrderEvent::OrderUpdated { seats }),
        (when.clone(), seats.clone()).prop_map(|(at, seats)| {
            OrderEvent::OrderPartiallyReserved {
                reservation_expires_at: at,
                seats,
            }
        }),
        (when, seats).prop_map(|(at, seats)| OrderEvent::OrderReservationCompleted {
            reservation_expires_at: at,
            seats,
        }),
        (money.clone(), 0u32..20, any::<bool>()).prop_map(|(price, quantity, free)| {
            let line = OrderLine {
                seat_type: SeatTypeId::new(),
                unit_price: price,
                quantity,
                line_total: price * Decimal::from(quantity),
            };
            // A total and its flag that disagree are still kept as written.
            OrderEvent::OrderTotalsCalculated {
                total: line.line_total,
                lines: vec![line],
                is_free_of_charge: free,
            }
        }),
        person.prop_map(|registrant| OrderEvent::OrderRegistrantAssigned {
            registrant,
            order: Some(OrderId::new()),
            conference: Some(ConferenceId::new()),
            replaces: None,
        }),
        Just(OrderEvent::OrderLockedForPayment),
        Just(OrderEvent::OrderUnlocked),
        Just(OrderEvent::OrderConfirmed(closed())),
        Just(OrderEvent::OrderExpired(closed())),
    ]
}

fn closed() -> OrderClosed {
    OrderClosed {
        order: Some(OrderId::new()),
        conference: Some(ConferenceId::new()),
        registrant: Some("ana@example.com".into()),
    }
}

fn current(event: &OrderEvent) -> RecordedEvent {
    let (event_type, payload) = cqrs_core::encode_message(event).unwrap();
    let version = OrderEvent::schema_version(event_type);
    stored(event_type, version, payload.to_value().unwrap())
}

proptest! {
    /// Today's events go through the chain untouched, whatever their content.
    #[test]
    fn upcasting_a_current_event_changes_nothing(event in order_event()) {
        prop_assert_eq!(read(&current(&event)), vec![event]);
    }

    /// Rows written before events were versioned (labelled v1, already in today's shape)
    /// keep every field they have.
    #[test]
    fn current_shapes_labelled_v1_keep_their_fields(event in order_event()) {
        let (event_type, payload) = cqrs_core::encode_message(&event).unwrap();
        prop_assert_eq!(read(&stored(event_type, 1, payload.to_value().unwrap())), vec![event]);
    }

    /// What V1 wrote reads back as the event it was, when V1 could have written it.
    #[test]
    fn v1_shapes_read_back_as_the_events_they_were(event in order_event()) {
        let event = match event {
            OrderEvent::OrderPlaced { conference, seats, reservation_expires_at, access_code, .. } => {
                OrderEvent::OrderPlaced {
                    conference, seats, reservation_expires_at, access_code,
                    seats_released_at: reservation_expires_at + versions::V1_RELEASE_BUFFER,
                }
            }
            OrderEvent::OrderTotalsCalculated { lines, total, .. } => {
                let free = total.is_zero() && lines.iter().any(|l| l.quantity > 0);
                OrderEvent::OrderTotalsCalculated { is_free_of_charge: free, lines, total }
            }
            // V1 named no order in these: they read back without it (and untagged).
            OrderEvent::OrderRegistrantAssigned { registrant, .. } => {
                OrderEvent::OrderRegistrantAssigned { registrant, order: None, conference: None, replaces: None }
            }
            OrderEvent::OrderConfirmed(_) => OrderEvent::OrderConfirmed(OrderClosed::default()),
            OrderEvent::OrderExpired(_) => OrderEvent::OrderExpired(OrderClosed::default()),
            other => other,
        };
        let (event_type, payload) = cqrs_core::encode_message(&event).unwrap();
        let (v1_type, v1_version, v1_payload) = to_v1(event_type, payload.to_value().unwrap()).unwrap();
        prop_assert_eq!(read(&stored(&v1_type, v1_version, v1_payload)), vec![event]);
    }
}
