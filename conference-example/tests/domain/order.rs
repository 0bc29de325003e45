use chrono::{DateTime, Duration, Utc};
use conference_example::domain::{
    AccessCode, ConferenceId, Order, OrderClosed, OrderCommand as C, OrderError, OrderEvent as E,
    OrderId, OrderLine, OrderStatus, PersonalInfo, PricingError, SeatPrice, SeatQuantity,
    SeatTypeId,
};
use cqrs_core::DomainEvent;
use cqrs_core::testing::Scenario;
use rust_decimal::Decimal;

struct Fixture {
    order: OrderId,
    conference: ConferenceId,
    paid: SeatTypeId,
    free: SeatTypeId,
    code: AccessCode,
    expires: DateTime<Utc>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            order: OrderId::new(),
            conference: ConferenceId::new(),
            paid: SeatTypeId::new(),
            free: SeatTypeId::new(),
            code: "ABC123".parse().unwrap(),
            expires: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    fn prices(&self) -> Vec<SeatPrice> {
        vec![
            SeatPrice {
                seat_type: self.paid,
                price: Decimal::new(100, 0),
            },
            SeatPrice {
                seat_type: self.free,
                price: Decimal::ZERO,
            },
        ]
    }

    fn register(&self, seats: Vec<SeatQuantity>) -> C {
        C::RegisterToConference {
            conference: self.conference,
            seats,
            prices: self.prices(),
            access_code: self.code.clone(),
            reservation_expires_at: self.expires,
            seats_released_at: self.expires + Duration::minutes(14),
        }
    }

    fn placed(&self, seats: Vec<SeatQuantity>) -> E {
        E::OrderPlaced {
            conference: self.conference,
            seats,
            reservation_expires_at: self.expires,
            seats_released_at: self.expires + Duration::minutes(14),
            access_code: self.code.clone(),
        }
    }

    fn line(&self, seat_type: SeatTypeId, quantity: u32) -> OrderLine {
        let unit_price = if seat_type == self.paid {
            Decimal::new(100, 0)
        } else {
            Decimal::ZERO
        };
        OrderLine {
            seat_type,
            unit_price,
            quantity,
            line_total: unit_price * Decimal::from(quantity),
        }
    }

    fn totals(&self, lines: Vec<OrderLine>) -> E {
        let total: Decimal = lines.iter().map(|l| l.line_total).sum();
        E::OrderTotalsCalculated {
            lines,
            total,
            is_free_of_charge: total.is_zero(),
        }
    }

    /// An order for 3 paid seats, placed and priced.
    fn placed_for_three(&self) -> Scenario<Order> {
        Scenario::new(self.order).given([
            self.placed(vec![SeatQuantity::new(self.paid, 3)]),
            self.totals(vec![self.line(self.paid, 3)]),
        ])
    }

    /// What closing the order says: which order, whose.
    fn closed(&self, registrant: Option<&str>) -> OrderClosed {
        OrderClosed {
            order: Some(self.order),
            conference: Some(self.conference),
            registrant: registrant.map(str::to_owned),
        }
    }

    fn confirmed(&self) -> E {
        E::OrderConfirmed(self.closed(None))
    }

    fn expired(&self) -> E {
        E::OrderExpired(self.closed(None))
    }

    fn reserved_three(&self) -> Scenario<Order> {
        self.placed_for_three()
            .given([E::OrderReservationCompleted {
                reservation_expires_at: self.expires,
                seats: vec![SeatQuantity::new(self.paid, 3)],
            }])
    }
}

#[test]
fn placing_an_order_prices_it() {
    let f = Fixture::new();
    Scenario::<Order>::new(OrderId::new())
        .when(f.register(vec![
            SeatQuantity::new(f.paid, 3),
            SeatQuantity::new(f.free, 2),
        ]))
        .then_events([
            f.placed(vec![
                SeatQuantity::new(f.paid, 3),
                SeatQuantity::new(f.free, 2),
            ]),
            f.totals(vec![f.line(f.paid, 3), f.line(f.free, 2)]),
        ])
        .then_state(|o| {
            assert_eq!(o.status, OrderStatus::PendingReservation);
            assert_eq!(o.totals.total, Decimal::new(300, 0));
        });
}

#[test]
fn an_order_of_free_seats_is_free_of_charge() {
    let f = Fixture::new();
    Scenario::<Order>::new(OrderId::new())
        .when(f.register(vec![SeatQuantity::new(f.free, 2)]))
        .then_events([
            f.placed(vec![SeatQuantity::new(f.free, 2)]),
            f.totals(vec![f.line(f.free, 2)]),
        ]);
}

#[test]
fn an_order_needs_a_seat_and_known_seat_types() {
    let f = Fixture::new();
    Scenario::<Order>::new(OrderId::new())
        .when(f.register(vec![SeatQuantity::new(f.paid, 0)]))
        .then_error(OrderError::NoSeats);
    let stranger = SeatTypeId::new();
    Scenario::<Order>::new(OrderId::new())
        .when(f.register(vec![SeatQuantity::new(stranger, 1)]))
        .then_error(OrderError::Pricing(PricingError::UnknownSeatType(stranger)));
}

#[test]
fn changing_seats_updates_and_reprices_the_order() {
    let f = Fixture::new();
    f.placed_for_three()
        .when(f.register(vec![SeatQuantity::new(f.paid, 1)]))
        .then_events([
            E::OrderUpdated {
                seats: vec![SeatQuantity::new(f.paid, 1)],
            },
            f.totals(vec![f.line(f.paid, 1)]),
        ])
        .then_state(|o| {
            assert_eq!(o.status, OrderStatus::PendingReservation);
            // The deadline and the access code stay those of the placement.
            assert_eq!(o.access_code, f.code);
        });
}

#[test]
fn every_seat_held_completes_the_reservation() {
    let f = Fixture::new();
    f.placed_for_three()
        .when(C::MarkSeatsAsReserved {
            seats: vec![SeatQuantity::new(f.paid, 3)],
            reservation_expires_at: f.expires,
        })
        .then_events([E::OrderReservationCompleted {
            reservation_expires_at: f.expires,
            seats: vec![SeatQuantity::new(f.paid, 3)],
        }]);
}

#[test]
fn fewer_seats_held_is_a_partial_reservation_priced_anew() {
    let f = Fixture::new();
    f.placed_for_three()
        .when(C::MarkSeatsAsReserved {
            seats: vec![SeatQuantity::new(f.paid, 2)],
            reservation_expires_at: f.expires,
        })
        .then_events([
            E::OrderPartiallyReserved {
                reservation_expires_at: f.expires,
                seats: vec![SeatQuantity::new(f.paid, 2)],
            },
            f.totals(vec![f.line(f.paid, 2)]),
        ])
        .then_state(|o| {
            assert_eq!(o.status, OrderStatus::PartiallyReserved);
            assert_eq!(o.seats, vec![SeatQuantity::new(f.paid, 2)]);
        });
}

#[test]
fn a_reserved_order_is_confirmed_once() {
    let f = Fixture::new();
    f.reserved_three()
        .when(C::Confirm)
        .then_events([f.confirmed()])
        .then_state(|o| assert_eq!(o.status, OrderStatus::Confirmed));
    f.reserved_three()
        .given([f.confirmed()])
        .when(C::Confirm)
        .then_no_events();
}

#[test]
fn an_order_is_not_confirmed_before_its_seats_are_held_nor_after_it_expired() {
    let f = Fixture::new();
    f.placed_for_three()
        .when(C::Confirm)
        .then_error(OrderError::NotReserved);
    f.reserved_three()
        .given([f.expired()])
        .when(C::Confirm)
        .then_error(OrderError::Expired);
    // A partial reservation that got nothing cannot be confirmed either.
    f.placed_for_three()
        .given([E::OrderPartiallyReserved {
            reservation_expires_at: f.expires,
            seats: vec![],
        }])
        .when(C::Confirm)
        .then_error(OrderError::NotReserved);
}

#[test]
fn rejecting_expires_an_open_order_and_is_refused_for_a_confirmed_one() {
    let f = Fixture::new();
    f.reserved_three()
        .when(C::Reject)
        .then_events([f.expired()])
        .then_state(|o| assert_eq!(o.status, OrderStatus::Expired));
    f.reserved_three()
        .given([f.expired()])
        .when(C::Reject)
        .then_no_events();
    f.reserved_three()
        .given([f.confirmed()])
        .when(C::Reject)
        .then_error(OrderError::AlreadyConfirmed);
    // Rejecting an order that was never placed does nothing.
    Scenario::<Order>::new(OrderId::new())
        .when(C::Reject)
        .then_no_events();
}

#[test]
fn a_confirmed_or_expired_order_keeps_its_seats() {
    let f = Fixture::new();
    f.reserved_three()
        .given([f.confirmed()])
        .when(f.register(vec![SeatQuantity::new(f.paid, 1)]))
        .then_error(OrderError::AlreadyConfirmed);
    f.reserved_three()
        .given([f.expired()])
        .when(C::MarkSeatsAsReserved {
            seats: vec![SeatQuantity::new(f.paid, 3)],
            reservation_expires_at: f.expires + Duration::minutes(15),
        })
        .then_error(OrderError::Expired);
}

#[test]
fn registrant_details_must_be_complete() {
    let f = Fixture::new();
    let ana = PersonalInfo {
        first_name: "Ana".into(),
        last_name: "Lima".into(),
        email: "ana@example.com".into(),
    };
    f.placed_for_three()
        .when(C::AssignRegistrantDetails {
            registrant: ana.clone(),
        })
        .then_events([E::OrderRegistrantAssigned {
            registrant: ana.clone(),
            order: Some(f.order),
            conference: Some(f.conference),
            replaces: None,
        }])
        .then_state(|o| assert_eq!(o.registrant.as_ref(), Some(&ana)));
    f.placed_for_three()
        .when(C::AssignRegistrantDetails {
            registrant: PersonalInfo {
                email: "not an email".into(),
                ..ana
            },
        })
        .then_error_matches(|e| matches!(e, OrderError::InvalidRegistrant(_)));
}

#[test]
fn commands_for_an_order_never_placed_are_refused() {
    Scenario::<Order>::new(OrderId::new())
        .when(C::Confirm)
        .then_error(OrderError::NotFound);
}

#[test]
fn a_payment_freezes_the_seats_until_it_is_cancelled() {
    let f = Fixture::new();
    f.reserved_three()
        .when(C::LockForPayment)
        .then_events([E::OrderLockedForPayment])
        .then_state(|o| assert!(o.payment_locked));
    f.reserved_three()
        .given([E::OrderLockedForPayment])
        .when(f.register(vec![SeatQuantity::new(f.paid, 1)]))
        .then_error(OrderError::PaymentUnderWay);
    f.reserved_three()
        .given([E::OrderLockedForPayment])
        .when(C::LockForPayment)
        .then_no_events();
    f.reserved_three()
        .given([E::OrderLockedForPayment])
        .when(C::Unlock)
        .then_events([E::OrderUnlocked])
        .then_state(|o| assert!(!o.payment_locked));
    // Only held seats can be paid for.
    f.placed_for_three()
        .when(C::LockForPayment)
        .then_error(OrderError::NotReserved);
}

#[test]
fn a_registrant_is_named_on_open_orders_and_tags_what_names_or_releases_them() {
    let f = Fixture::new();
    let person = |email: &str| PersonalInfo {
        first_name: "Ana".into(),
        last_name: "Lima".into(),
        email: email.into(),
    };
    let named = |email: &str, replaces: Option<&str>| E::OrderRegistrantAssigned {
        registrant: person(email),
        order: Some(f.order),
        conference: Some(f.conference),
        replaces: replaces.map(str::to_owned),
    };
    // Another registrant in the first one's place releases the first: the event names both.
    let replaced = named("bo@example.com", Some("Ana@Example.com"));
    f.placed_for_three()
        .given([named("Ana@Example.com", None)])
        .when(C::AssignRegistrantDetails {
            registrant: person("bo@example.com"),
        })
        .then_events([replaced.clone()]);
    let tags: Vec<String> = replaced.tags().iter().map(ToString::to_string).collect();
    assert_eq!(
        tags,
        ["registrant:bo@example.com", "registrant:ana@example.com"],
        "tagged in lower case, with the registrant it replaces"
    );
    // The same email in another case is the same registrant: nothing is replaced.
    f.placed_for_three()
        .given([named("ana@example.com", None)])
        .when(C::AssignRegistrantDetails {
            registrant: person("ANA@example.com"),
        })
        .then_events([named("ANA@example.com", None)]);
    // Closing the order names its registrant, and is tagged with them.
    let confirmed = E::OrderConfirmed(f.closed(Some("ana@example.com")));
    f.reserved_three()
        .given([named("ana@example.com", None)])
        .when(C::Confirm)
        .then_events([confirmed.clone()]);
    assert_eq!(
        confirmed
            .tags()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["registrant:ana@example.com"]
    );
    assert!(f.confirmed().tags().is_empty(), "no registrant, no tag");
    // A closed order keeps its registrant.
    for closed in [f.confirmed(), f.expired()] {
        let refusal = if matches!(closed, E::OrderConfirmed(_)) {
            OrderError::AlreadyConfirmed
        } else {
            OrderError::Expired
        };
        f.reserved_three()
            .given([closed])
            .when(C::AssignRegistrantDetails {
                registrant: person("ana@example.com"),
            })
            .then_error(refusal);
    }
}
