//! End to end through the application layer: the paid path, the zero-cost path, a partial
//! reservation and an expiry, on every store.

mod backpressure;
mod demo;
mod flows;
mod oversell;
mod sessions;

use std::sync::Arc;

use conference_example::app::{AppConfig, ConferenceApp, NewConference};
use conference_example::domain::{ConferenceCommand, ConferenceId, SeatType, SeatTypeId};
use cqrs_core::{ManualClock, Storage};
use rust_decimal::Decimal;

/// A published conference with a paid and a free seat type.
struct World {
    app: ConferenceApp,
    clock: ManualClock,
    conference: ConferenceId,
    full: SeatTypeId,
    party: SeatTypeId,
}

impl World {
    async fn new(storage: Arc<dyn Storage>) -> Self {
        let clock = ManualClock::new("2026-05-04T09:00:00Z".parse().unwrap());
        let app = ConferenceApp::new(storage, Arc::new(clock.clone()), AppConfig::default());
        let (conference, _) = app
            .create_conference(NewConference::example("devconf"))
            .await
            .unwrap();
        let full = app
            .add_seat_type(
                conference,
                SeatType {
                    name: "Full pass".into(),
                    description: "Every talk".into(),
                    quantity: 10,
                    price: Decimal::new(19_900, 2),
                },
            )
            .await
            .unwrap();
        let party = app
            .add_seat_type(
                conference,
                SeatType {
                    name: "Party".into(),
                    description: "The evening party".into(),
                    quantity: 5,
                    price: Decimal::ZERO,
                },
            )
            .await
            .unwrap();
        app.manage(conference, ConferenceCommand::Publish)
            .await
            .unwrap();
        app.settle().await.unwrap();
        Self {
            app,
            clock,
            conference,
            full,
            party,
        }
    }

    fn available(&self, seat_type: SeatTypeId) -> i64 {
        self.app.conference_by_slug("devconf").unwrap().seat_types[&seat_type]
            .available
            .unwrap()
    }
}
