//! Loading aggregates: a command on an aggregate with 1,000 prior events (with snapshots)
//! beside one on a new aggregate, and the load of a 100-event stream beside raw rusqlite.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use benches::{Account, AccountCommand, RawSqlite, deposit_payload, open_account};
use cqrs_core::{
    Aggregate, EventStore, ExpectedVersion, Json, NewEvent, Repository, Snapshot, SnapshotPolicy,
    SnapshotStore, Version,
};
use cqrs_store_sqlite::SqliteEventStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn deposits(n: u64, payload: &str) -> Vec<NewEvent> {
    (0..n)
        .map(|_| NewEvent::new("account.deposited", Json::from_stored(payload)))
        .collect()
}

fn load(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rt
        .block_on(SqliteEventStore::open(dir.path().join("store.db")))
        .expect("store");
    let raw = RawSqlite::open(&dir.path().join("raw.db"), "FULL");
    let payload = deposit_payload();
    let accounts = Repository::<Account>::new(Arc::new(store.clone()))
        .with_snapshots(SnapshotPolicy::every(100));

    // An account with 1,000 events, snapshotted at 1,000 as the policy would have.
    let busy = "busy".to_owned();
    let stream = Account::stream_id(&busy).expect("stream");
    rt.block_on(async {
        let opened = cqrs_core::encode_message(&benches::AccountEvent::Opened {
            owner: "ana".into(),
        })
        .expect("encode");
        let mut events = vec![NewEvent::new(opened.0, opened.1)];
        events.extend(deposits(999, &payload));
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await
            .expect("fill");
        let state = Account { balance: 999 * 100 };
        store
            .save_snapshot(Snapshot {
                stream: stream.clone(),
                version: Version::new(1000),
                schema_version: Account::SNAPSHOT_VERSION,
                state: Json::encode(&state).expect("state"),
                taken_at: chrono_now(),
            })
            .await
            .expect("snapshot");
    });
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("sqlite_full/command_on_aggregate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("new_aggregate", |b| {
        b.to_async(&rt).iter(|| {
            open_account(
                &accounts,
                format!("new{}", counter.fetch_add(1, Ordering::Relaxed)),
            )
        });
    });
    group.bench_function("1000_prior_events_with_snapshots", |b| {
        b.to_async(&rt).iter(|| async {
            accounts
                .handle(&busy, AccountCommand::Deposit { amount: 1 })
                .await
                .expect("deposit")
        });
    });
    group.finish();

    // A 100-event stream, loaded whole.
    let hundred = "hundred".to_owned();
    let plain = Repository::<Account>::new(Arc::new(store.clone()));
    rt.block_on(async {
        let opened = cqrs_core::encode_message(&benches::AccountEvent::Opened {
            owner: "ana".into(),
        })
        .expect("encode");
        let mut events = vec![NewEvent::new(opened.0, opened.1)];
        events.extend(deposits(99, &payload));
        store
            .append(
                &Account::stream_id(&hundred).expect("stream"),
                ExpectedVersion::NoStream,
                events,
            )
            .await
            .expect("fill");
    });
    raw.fill("account-hundred", 1, 100, &payload);
    let mut group = c.benchmark_group("sqlite_full/load_100_events");
    group.throughput(Throughput::Elements(100));
    group.bench_function("raw", |b| b.iter(|| raw.load("account-hundred")));
    group.bench_function("store", |b| {
        b.to_async(&rt)
            .iter(|| async { plain.load(&hundred).await.expect("load") });
    });
    group.finish();
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    cqrs_core::Clock::now(&cqrs_core::SystemClock)
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = load }
criterion_main!(benches);
