//! Random interleavings of many registrants' orders, seat changes, payments and expiries
//! against one quota: nothing is ever oversold, and once everything settles the remaining
//! seats equal the quota minus the seats held and sold.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use conference_example::app::PaymentStep;
use conference_example::domain::{OrderId, SeatQuantity, SeatsAvailability};
use conference_example::read::DraftOrderState;
use cqrs_core::{InMemoryEventStore, Repository};
use proptest::prelude::*;

use crate::World;

const REGISTRANTS: usize = 6;

#[derive(Debug, Clone)]
enum Step {
    Place { who: usize, seats: u32 },
    Change { who: usize, seats: u32 },
    Pay { who: usize },
    Wait { minutes: i64 },
    Settle,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..REGISTRANTS, 1..7_u32).prop_map(|(who, seats)| Step::Place { who, seats }),
        2 => (0..REGISTRANTS, 1..7_u32).prop_map(|(who, seats)| Step::Change { who, seats }),
        2 => (0..REGISTRANTS).prop_map(|who| Step::Pay { who }),
        1 => (1..20_i64).prop_map(|minutes| Step::Wait { minutes }),
        2 => Just(Step::Settle),
    ]
}

async fn run(steps: Vec<Step>) {
    let w = World::new(Arc::new(InMemoryEventStore::new())).await;
    let quota = 10_i64;
    let mut orders: BTreeMap<usize, OrderId> = BTreeMap::new();
    for step in steps {
        match step {
            Step::Place { who, seats } => {
                if let std::collections::btree_map::Entry::Vacant(entry) = orders.entry(who) {
                    let order = w
                        .app
                        .place_order(w.conference, vec![SeatQuantity::new(w.full, seats)])
                        .await
                        .expect("placing an order of seats on sale");
                    entry.insert(order);
                }
            }
            Step::Change { who, seats } => {
                if let Some(order) = orders.get(&who) {
                    // Refused for confirmed or expired orders, and before the read model
                    // shows the order: both are fine here.
                    let _ = w
                        .app
                        .update_order(*order, vec![SeatQuantity::new(w.full, seats)])
                        .await;
                }
            }
            Step::Pay { who } => {
                if let Some(order) = orders.get(&who)
                    && let Ok(PaymentStep::Started(payment)) = w.app.start_payment(*order).await
                {
                    w.app
                        .complete_payment(payment)
                        .await
                        .expect("a new payment completes");
                }
            }
            Step::Wait { minutes } => w.clock.advance(Duration::minutes(minutes)),
            Step::Settle => w.app.settle().await.expect("settle"),
        }
        // Never oversold, at any moment: what the conference's seats hold and sold fits.
        let seats = Repository::<SeatsAvailability>::new(Arc::clone(w.app.storage()))
            .load(&w.conference)
            .await
            .expect("load the seats")
            .state
            .expect("the conference has seats");
        let held: i64 = seats
            .pending
            .values()
            .flatten()
            .map(|s| i64::from(s.quantity))
            .sum();
        assert!(held <= quota, "{held} seats held of {quota}");
        assert!(
            seats.remaining[&w.full] >= 0,
            "remaining seats went negative"
        );
    }
    w.app.settle().await.expect("settle");

    let (mut held, mut sold) = (0_i64, 0_i64);
    for order in orders.values() {
        let Ok(draft) = w.app.draft_order(*order) else {
            continue;
        };
        let reserved: i64 = draft.items.iter().map(|i| i64::from(i.reserved)).sum();
        match draft.state {
            DraftOrderState::Confirmed => sold += reserved,
            DraftOrderState::PartiallyReserved | DraftOrderState::ReservationCompleted => {
                held += reserved;
            }
            DraftOrderState::PendingReservation => {
                panic!("order {order} still waits for seats after settling")
            }
            DraftOrderState::Expired => {}
        }
    }
    assert!(held + sold <= quota, "{held} held + {sold} sold > {quota}");
    assert_eq!(
        w.available(w.full),
        quota - held - sold,
        "remaining seats read model"
    );
    let seats = Repository::<SeatsAvailability>::new(Arc::clone(w.app.storage()))
        .load(&w.conference)
        .await
        .expect("load the seats")
        .state
        .expect("the conference has seats");
    assert_eq!(
        seats.remaining[&w.full],
        quota - held - sold,
        "the conference's own count"
    );
}

proptest! {
    // 48 cases by default (a few seconds); `PROPTEST_CASES` asks for more.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48),
    ))]

    #[test]
    fn random_registrations_never_oversell(steps in prop::collection::vec(step(), 1..40)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(run(steps));
    }
}
