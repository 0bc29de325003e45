//! The conference application's place-and-confirm flow, end to end through its processes and
//! read models: an order placed, its seats reserved by the registration process, a payment
//! started and completed, the order confirmed and its seats assigned — on the in-memory store
//! and on SQLite; and the registration process's reservation rate while a conference already
//! holds 1,000 or 33,000 orders (it must not fall as the conference grows).

use std::sync::Arc;

use conference_example::app::{AppConfig, ConferenceApp, PaymentStep};
use conference_example::domain::SeatQuantity;
use cqrs_core::SystemClock;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

fn flow(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("dir");
    for (engine, storage) in benches::stores(&rt, dir.path(), "conference.db") {
        let app = ConferenceApp::new(storage, Arc::new(SystemClock), AppConfig::default());
        let (conference, seat_type, _) = rt
            .block_on(app.publish_example("bench", 100_000))
            .expect("publish");
        let mut group = c.benchmark_group(format!("{engine}/conference_flow"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(20);
        benches::settle_disk();
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

/// Orders placed and reserved per measured round.
const ROUND: u32 = 100;

/// The reservation rate at a conference already holding `held` reserved orders: each round
/// places [`ROUND`] orders (untimed) and times the processes reserving them all.
fn reservations(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("dir");
    // The 33,000 of the hostile test's finding, unless a short run asked for small logs.
    let sizes: &[u32] = if benches::big_log_size() >= 1_000_000 {
        &[1_000, 33_000]
    } else {
        &[1_000, 3_000]
    };
    let storage: Arc<dyn cqrs_core::Storage> = Arc::new(
        rt.block_on(cqrs_store_sqlite::SqliteEventStore::open(
            dir.path().join("reservations.db"),
        ))
        .expect("store"),
    );
    let app = ConferenceApp::new(storage, Arc::new(SystemClock), AppConfig::default());
    let mut group = c.benchmark_group("sqlite_full/conference_reservations");
    group.throughput(Throughput::Elements(u64::from(ROUND)));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    // Last, a new conference in the store the others filled: what the store's own growth
    // costs, apart from the conference's.
    let rounds = sizes
        .iter()
        .map(|&held| (held, format!("reserve_with_{held}_held")));
    let control = (
        0,
        format!("reserve_with_0_held_after_{}", sizes.iter().sum::<u32>()),
    );
    for (i, (held, name)) in rounds.chain([control]).enumerate() {
        let slug = format!("held{i}");
        let (conference, seat_type) = rt.block_on(async {
            let (conference, seat_type) = published(&app, &slug, 100_000).await;
            for placed in 0..held {
                app.place_order(conference, vec![SeatQuantity::new(seat_type, 1)])
                    .await
                    .expect("place");
                if placed % 500 == 499 {
                    app.settle().await.expect("reserve");
                }
            }
            app.settle().await.expect("reserve");
            (conference, seat_type)
        });
        benches::settle_disk();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|rounds| {
                let app = app.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..rounds {
                        for _ in 0..ROUND {
                            app.place_order(conference, vec![SeatQuantity::new(seat_type, 1)])
                                .await
                                .expect("place");
                        }
                        let started = Instant::now();
                        app.settle().await.expect("reserve");
                        spent += started.elapsed();
                    }
                    spent
                }
            });
        });
    }
    group.finish();
}

/// A published conference `slug` with one seat type of `quantity` seats.
async fn published(
    app: &ConferenceApp,
    slug: &str,
    quantity: u32,
) -> (
    conference_example::domain::ConferenceId,
    conference_example::domain::SeatTypeId,
) {
    let (conference, seat_type, _) = app.publish_example(slug, quantity).await.expect("publish");
    (conference, seat_type)
}

criterion_group!(benches, flow, reservations);
criterion_main!(benches);
