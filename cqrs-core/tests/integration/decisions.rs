use std::sync::Arc;

use chrono::{TimeZone, Utc};
use cqrs_core::testing::DecisionScenario;
use cqrs_core::{
    CommandError, Decision, DomainEvent, Emit, EventQuery, EventReader, EventStore,
    ExpectedVersion, InMemoryEventStore, Json, ManualClock, NewEvent, QueryItem, StreamId, System,
    Tag, Upcasters, Version,
};
use serde::{Deserialize, Serialize};

/// A registrant has at most one open order per conference: placing an order reads the
/// registrant's orders for that conference, across every order's stream.
struct OneOpenOrder;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ordering {
    #[serde(rename = "ordering.place")]
    Place {
        order: String,
        registrant: String,
        conference: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderingEvent {
    #[serde(rename = "ordering.placed")]
    Placed {
        order: String,
        registrant: String,
        conference: String,
    },
    #[serde(rename = "ordering.closed")]
    Closed {
        order: String,
        registrant: String,
        conference: String,
    },
    /// Noted in the registrant's own stream, beside the order.
    #[serde(rename = "ordering.noted")]
    Noted { order: String },
}

impl DomainEvent for OrderingEvent {
    fn tags(&self) -> Vec<Tag> {
        match self {
            Self::Placed {
                registrant,
                conference,
                ..
            }
            | Self::Closed {
                registrant,
                conference,
                ..
            } => vec![
                Tag::new("registrant", registrant).unwrap(),
                Tag::new("conference", conference).unwrap(),
            ],
            Self::Noted { .. } => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{registrant} already has the open order {open}")]
struct AlreadyOrdering {
    registrant: String,
    open: String,
}

fn order_stream(order: &str) -> StreamId {
    StreamId::for_aggregate("order", &order).unwrap()
}

fn registrant_stream(registrant: &str) -> StreamId {
    StreamId::for_aggregate("registrant", &registrant).unwrap()
}

impl Decision for OneOpenOrder {
    const NAME: &'static str = "ordering.one_open_order";
    type Command = Ordering;
    type Event = OrderingEvent;
    type Error = AlreadyOrdering;
    type State = Option<String>;

    fn target(Ordering::Place { order, .. }: &Ordering) -> StreamId {
        order_stream(order)
    }

    fn query(
        Ordering::Place {
            registrant,
            conference,
            ..
        }: &Ordering,
    ) -> EventQuery {
        EventQuery::items([QueryItem::types(["ordering.placed", "ordering.closed"])
            .with_tag(Tag::new("registrant", registrant).unwrap())
            .with_tag(Tag::new("conference", conference).unwrap())])
    }

    fn initial(_: &Ordering) -> Option<String> {
        None
    }

    fn apply(open: &mut Option<String>, event: &OrderingEvent) {
        match event {
            OrderingEvent::Placed { order, .. } => *open = Some(order.clone()),
            OrderingEvent::Closed { order, .. } if open.as_ref() == Some(order) => *open = None,
            _ => {}
        }
    }

    fn decide(
        open: &Option<String>,
        command: &Ordering,
    ) -> Result<Vec<Emit<OrderingEvent>>, AlreadyOrdering> {
        let Ordering::Place {
            order,
            registrant,
            conference,
        } = command;
        if let Some(open) = open {
            return Err(AlreadyOrdering {
                registrant: registrant.clone(),
                open: open.clone(),
            });
        }
        Ok(vec![
            Emit::to(
                order_stream(order),
                OrderingEvent::Placed {
                    order: order.clone(),
                    registrant: registrant.clone(),
                    conference: conference.clone(),
                },
            )
            .expecting(ExpectedVersion::NoStream),
            Emit::to(
                registrant_stream(registrant),
                OrderingEvent::Noted {
                    order: order.clone(),
                },
            ),
        ])
    }
}

fn place(order: &str, registrant: &str, conference: &str) -> Ordering {
    Ordering::Place {
        order: order.into(),
        registrant: registrant.into(),
        conference: conference.into(),
    }
}

fn placed(order: &str, registrant: &str, conference: &str) -> OrderingEvent {
    OrderingEvent::Placed {
        order: order.into(),
        registrant: registrant.into(),
        conference: conference.into(),
    }
}

fn closed(order: &str, registrant: &str, conference: &str) -> OrderingEvent {
    OrderingEvent::Closed {
        order: order.into(),
        registrant: registrant.into(),
        conference: conference.into(),
    }
}

fn noted(order: &str) -> OrderingEvent {
    OrderingEvent::Noted {
        order: order.into(),
    }
}

#[test]
fn a_first_order_goes_to_its_stream_and_the_registrants() {
    DecisionScenario::<OneOpenOrder>::new()
        .when(place("o1", "ann", "rust"))
        .then_emitted([
            (order_stream("o1"), placed("o1", "ann", "rust")),
            (registrant_stream("ann"), noted("o1")),
        ])
        .then_events([placed("o1", "ann", "rust"), noted("o1")]);
}

#[test]
fn a_second_open_order_is_refused_and_a_closed_one_is_not_counted() {
    DecisionScenario::<OneOpenOrder>::new()
        .given(order_stream("o1"), [placed("o1", "ann", "rust")])
        .when(place("o2", "ann", "rust"))
        .then_error(AlreadyOrdering {
            registrant: "ann".into(),
            open: "o1".into(),
        });
    DecisionScenario::<OneOpenOrder>::new()
        .given(
            order_stream("o1"),
            [placed("o1", "ann", "rust"), closed("o1", "ann", "rust")],
        )
        .when(place("o2", "ann", "rust"))
        .then_events([placed("o2", "ann", "rust"), noted("o2")]);
}

#[test]
fn only_what_the_query_selects_is_folded() {
    DecisionScenario::<OneOpenOrder>::new()
        .given(order_stream("o1"), [placed("o1", "ann", "go")])
        .given(order_stream("o2"), [placed("o2", "bob", "rust")])
        .given(registrant_stream("ann"), [noted("o1")])
        .when(place("o3", "ann", "rust"))
        .then_selected(|events| assert!(events.is_empty(), "{events:?}"))
        .then_events([placed("o3", "ann", "rust"), noted("o3")]);
}

#[test]
fn an_expected_version_the_given_streams_break_is_a_conflict() {
    DecisionScenario::<OneOpenOrder>::new()
        .given(order_stream("o1"), [noted("o0")])
        .when(place("o1", "ann", "rust"))
        .then_conflict(&order_stream("o1"));
}

#[test]
#[should_panic(expected = "the command caused other events (or in other streams) than expected")]
fn an_event_in_the_wrong_stream_fails_the_test() {
    DecisionScenario::<OneOpenOrder>::new()
        .when(place("o1", "ann", "rust"))
        .then_emitted([
            (order_stream("o1"), placed("o1", "ann", "rust")),
            (order_stream("o1"), noted("o1")),
        ]);
}

#[tokio::test]
async fn the_same_scenarios_through_a_store() {
    let store = Arc::new(InMemoryEventStore::new());
    DecisionScenario::<OneOpenOrder>::new()
        .given(order_stream("o1"), [placed("o1", "ann", "rust")])
        .when_on(store.clone(), place("o2", "ann", "rust"))
        .await
        .then_error(AlreadyOrdering {
            registrant: "ann".into(),
            open: "o1".into(),
        });
    DecisionScenario::<OneOpenOrder>::new()
        .given(order_stream("o3"), [placed("o3", "bob", "go")])
        .when_on(store.clone(), place("o4", "bob", "rust"))
        .await
        .then_emitted([
            (order_stream("o4"), placed("o4", "bob", "rust")),
            (registrant_stream("bob"), noted("o4")),
        ]);
    DecisionScenario::<OneOpenOrder>::new()
        .given(order_stream("o5"), [noted("o")])
        .when_on(store, place("o5", "cy", "rust"))
        .await
        .then_conflict(&order_stream("o5"));
}

/// A stream that is not at the version an `Emit` requires fails at once, naming it: the
/// condition holds, so deciding again would decide the same.
#[tokio::test]
async fn a_stream_at_another_version_fails_at_once() {
    let store = Arc::new(InMemoryEventStore::new());
    store
        .append(
            &order_stream("o1"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "ordering.noted",
                Json::encode(&serde_json::json!({"order": "x"})).unwrap(),
            )],
        )
        .await
        .unwrap();
    let decider = cqrs_core::Decider::<OneOpenOrder>::new(store.clone());
    match decider.handle(place("o1", "ann", "rust")).await {
        Err(CommandError::Conflict { stream, attempts }) => {
            assert_eq!((stream, attempts), (order_stream("o1"), 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        store
            .read_stream(&registrant_stream("ann"), Version::START)
            .await
            .unwrap()
            .is_empty(),
        "nothing of the decision was written"
    );
}

/// A decider from the system takes the system's clock for its records and events, and its
/// upcasters both to decode and to widen the query to old type names.
#[tokio::test]
async fn the_system_wires_the_clock_and_the_upcasters() {
    let store = Arc::new(InMemoryEventStore::new());
    let at = Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap();
    let clock = ManualClock::new(at);
    let system = System::builder(store.clone())
        .clock(Arc::new(clock))
        .upcasters(Upcasters::new().rename("OrderOpened", 1, "ordering.placed", 1))
        .build();
    // Stored under its old name, tagged as it is now.
    let old = placed("o1", "ann", "rust");
    let payload = cqrs_core::encode_message(&old).unwrap().1;
    store
        .append(
            &order_stream("o1"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("OrderOpened", payload).with_tags(old.tags())],
        )
        .await
        .unwrap();
    let decider = system.decider::<OneOpenOrder>();
    let err = decider
        .handle(place("o2", "ann", "rust"))
        .await
        .expect_err("the old order is open");
    assert_eq!(
        err.rejection(),
        Some(&AlreadyOrdering {
            registrant: "ann".into(),
            open: "o1".into()
        })
    );
    let decided = decider
        .handle(place("o3", "bob", "rust"))
        .await
        .expect("bob has no order");
    let stored = store
        .read_stream(&order_stream("o3"), Version::START)
        .await
        .unwrap();
    assert_eq!(stored[0].metadata.recorded_at, at);
    assert_eq!(stored[0].metadata.command_id, Some(decided.command_id));
}
