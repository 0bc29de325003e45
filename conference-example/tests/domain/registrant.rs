use chrono::DateTime;
use conference_example::domain::{
    AccessCode, ConferenceId, OneOpenOrderPerRegistrant, Order, OrderClosed, OrderError,
    OrderEvent as E, OrderId, PersonalInfo, RegistrantAssignment, RegistrantError,
};
use cqrs_core::testing::DecisionScenario;
use cqrs_core::{Aggregate, StreamId};

type Rule = DecisionScenario<OneOpenOrderPerRegistrant>;

fn stream(order: OrderId) -> StreamId {
    Order::stream_id(&order).unwrap()
}

fn placed(conference: ConferenceId) -> E {
    E::OrderPlaced {
        conference,
        seats: vec![],
        reservation_expires_at: DateTime::UNIX_EPOCH,
        seats_released_at: DateTime::UNIX_EPOCH,
        access_code: AccessCode::generate(),
    }
}

fn person(email: &str) -> PersonalInfo {
    PersonalInfo {
        first_name: "Ana".into(),
        last_name: "Lima".into(),
        email: email.into(),
    }
}

fn named(order: OrderId, conference: ConferenceId, email: &str, replaces: Option<&str>) -> E {
    E::OrderRegistrantAssigned {
        registrant: person(email),
        order: Some(order),
        conference: Some(conference),
        replaces: replaces.map(str::to_owned),
    }
}

fn closed(order: OrderId, conference: ConferenceId, email: &str) -> OrderClosed {
    OrderClosed {
        order: Some(order),
        conference: Some(conference),
        registrant: Some(email.into()),
    }
}

fn assign(order: OrderId, email: &str) -> RegistrantAssignment {
    RegistrantAssignment::Assign {
        order,
        registrant: person(email),
    }
}

const ANA: &str = "ana@example.com";

#[test]
fn another_open_order_for_the_conference_refuses_the_registrant() {
    let (c, first, second) = (ConferenceId::new(), OrderId::new(), OrderId::new());
    Rule::new()
        .given(stream(first), [placed(c), named(first, c, ANA, None)])
        .given(stream(second), [placed(c)])
        .when(assign(second, "ANA@example.com"))
        .then_selected(|events| assert_eq!(events, [named(first, c, ANA, None)]))
        .then_error(RegistrantError::AnotherOrderOpen);
}

#[test]
fn a_closed_or_released_order_no_longer_counts() {
    let (c, first, second) = (ConferenceId::new(), OrderId::new(), OrderId::new());
    for closing in [
        E::OrderConfirmed(closed(first, c, ANA)),
        E::OrderExpired(closed(first, c, ANA)),
        named(first, c, "bo@example.com", Some(ANA)),
    ] {
        Rule::new()
            .given(
                stream(first),
                [placed(c), named(first, c, ANA, None), closing],
            )
            .given(stream(second), [placed(c)])
            .when(assign(second, ANA))
            .then_emitted([(stream(second), named(second, c, ANA, None))]);
    }
}

#[test]
fn other_conferences_other_registrants_and_the_order_itself_do_not_count() {
    let (c, other, first, second) = (
        ConferenceId::new(),
        ConferenceId::new(),
        OrderId::new(),
        OrderId::new(),
    );
    // Ana's open order elsewhere, and Bo's here.
    Rule::new()
        .given(
            stream(first),
            [placed(other), named(first, other, ANA, None)],
        )
        .given(
            stream(OrderId::new()),
            [named(OrderId::new(), c, "bo@example.com", None)],
        )
        .given(stream(second), [placed(c)])
        .when(assign(second, ANA))
        .then_selected(|events| assert_eq!(events.len(), 1, "Bo's order is not read"))
        .then_emitted([(stream(second), named(second, c, ANA, None))]);
    // Named again on the same order: her details change, nothing is replaced.
    Rule::new()
        .given(stream(second), [placed(c), named(second, c, ANA, None)])
        .when(assign(second, ANA))
        .then_emitted([(stream(second), named(second, c, ANA, None))]);
}

#[test]
fn the_orders_own_rules_come_first() {
    let (c, order) = (ConferenceId::new(), OrderId::new());
    Rule::new()
        .when(assign(order, ANA))
        .then_error(RegistrantError::Order(OrderError::NotFound));
    Rule::new()
        .given(
            stream(order),
            [placed(c), E::OrderExpired(OrderClosed::default())],
        )
        .when(assign(order, ANA))
        .then_error(RegistrantError::Order(OrderError::Expired));
    Rule::new()
        .given(stream(order), [placed(c)])
        .when(assign(order, "not an email"))
        .then_error_matches(|e| {
            matches!(e, RegistrantError::Order(OrderError::InvalidRegistrant(_)))
        });
    for bad in [
        PersonalInfo {
            first_name: "A".repeat(PersonalInfo::MAX_NAME_LEN + 1),
            ..person(ANA)
        },
        PersonalInfo {
            last_name: "Li\u{1b}[2Jma".into(),
            ..person(ANA)
        },
    ] {
        Rule::new()
            .given(stream(order), [placed(c)])
            .when(RegistrantAssignment::Assign {
                order,
                registrant: bad,
            })
            .then_error_matches(|e| {
                matches!(e, RegistrantError::Order(OrderError::InvalidRegistrant(_)))
            });
    }
    let long = format!("{}@example.com", "a".repeat(PersonalInfo::MAX_EMAIL_LEN));
    Rule::new()
        .given(stream(order), [placed(c)])
        .when(assign(order, &long))
        .then_error_matches(|e| {
            matches!(e, RegistrantError::Order(OrderError::InvalidRegistrant(_)))
        });
}

#[test]
fn events_stored_before_registrants_were_tagged_are_not_counted() {
    let (c, first, second) = (ConferenceId::new(), OrderId::new(), OrderId::new());
    let untagged = E::OrderRegistrantAssigned {
        registrant: person(ANA),
        order: None,
        conference: None,
        replaces: None,
    };
    Rule::new()
        .given(stream(first), [placed(c), untagged])
        .given(stream(second), [placed(c)])
        .when(assign(second, ANA))
        .then_emitted([(stream(second), named(second, c, ANA, None))]);
}
