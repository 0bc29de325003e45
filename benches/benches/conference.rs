//! The conference application's place-and-confirm flow, end to end through its processes and
//! read models: an order placed, its seats reserved by the registration process, a payment
//! started and completed, the order confirmed and its seats assigned — on the in-memory store
//! and on SQLite.

use std::sync::Arc;

use conference_example::app::{AppConfig, ConferenceApp, NewConference, PaymentStep};
use conference_example::domain::{ConferenceCommand, SeatQuantity, SeatType};
use cqrs_core::SystemClock;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rust_decimal::Decimal;

fn flow(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("dir");
    for (engine, storage) in benches::stores(&rt, dir.path(), "conference.db") {
        let app = ConferenceApp::new(storage, Arc::new(SystemClock), AppConfig::default());
        let (conference, seat_type) = rt.block_on(async {
            let (conference, _) = app
                .create_conference(NewConference::example("bench"))
                .await
                .expect("create");
            let seat_type = app
                .add_seat_type(
                    conference,
                    SeatType {
                        name: "Pass".into(),
                        description: "Both days".into(),
                        quantity: 100_000,
                        price: Decimal::new(10_000, 2),
                    },
                )
                .await
                .expect("seat type");
            app.manage(conference, ConferenceCommand::Publish)
                .await
                .expect("publish");
            app.settle().await.expect("settle");
            (conference, seat_type)
        });
        let mut group = c.benchmark_group(format!("{engine}/conference_flow"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(20);
        group.bench_function("place_pay_confirm", |b| {
            b.to_async(&rt).iter(|| async {
                let order = app
                    .place_order(conference, vec![SeatQuantity::new(seat_type, 2)])
                    .await
                    .expect("place");
                app.settle().await.expect("reserve");
                let PaymentStep::Started(payment) =
                    app.start_payment(order).await.expect("payment")
                else {
                    panic!("a paid order");
                };
                app.complete_payment(payment).await.expect("complete");
                app.settle().await.expect("confirm");
                assert!(
                    app.order_seats(order).is_some(),
                    "confirmed, seats assigned"
                );
            });
        });
        group.finish();
    }
}

criterion_group!(benches, flow);
criterion_main!(benches);
