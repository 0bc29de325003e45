//! Appends and commands on new aggregates: the store beside raw rusqlite at the same
//! durability, sequentially and with 16 concurrent tasks (where group commit shows).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use benches::{Account, RawSqlite, deposit_payload, in_parallel, open_account};
use cqrs_core::{EventStore, ExpectedVersion, Json, NewEvent, Repository, StreamId};
use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn settings(durability: Durability) -> (SqliteOptions, &'static str, &'static str) {
    match durability {
        Durability::Normal => (
            SqliteOptions::default().with_durability(Durability::Normal),
            "NORMAL",
            "normal",
        ),
        _ => (SqliteOptions::default(), "FULL", "full"),
    }
}

fn append(c: &mut Criterion) {
    let rt = benches::runtime();
    for durability in [Durability::Full, Durability::Normal] {
        let (options, synchronous, label) = settings(durability);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = rt
            .block_on(SqliteEventStore::open_with(
                dir.path().join("store.db"),
                options,
            ))
            .expect("store");
        let raw = RawSqlite::open(&dir.path().join("raw.db"), synchronous);
        let payload = deposit_payload();
        let counter = AtomicU64::new(0);
        let next = || counter.fetch_add(1, Ordering::Relaxed);

        let mut group = c.benchmark_group(format!("sqlite_{label}/append_1_event"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("raw", |b| {
            b.iter(|| raw.append_one(&format!("raw-{}", next()), 1, &payload))
        });
        group.bench_function("store", |b| {
            b.to_async(&rt).iter(|| {
                let stream = StreamId::new(format!("account-{}", next())).expect("stream");
                let event = NewEvent::new("account.deposited", Json::from_stored(payload.as_str()));
                let store = &store;
                async move {
                    store
                        .append(&stream, ExpectedVersion::NoStream, vec![event])
                        .await
                        .expect("append")
                }
            });
        });
        group.finish();

        let accounts = Repository::<Account>::new(Arc::new(store.clone()));
        let mut group = c.benchmark_group(format!("sqlite_{label}/command_new_aggregate"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("raw_one_txn_per_command", |b| {
            b.iter(|| raw.command(&format!("raw-{}", next()), &payload))
        });
        group.bench_function("store_1_task", |b| {
            b.to_async(&rt)
                .iter(|| open_account(&accounts, format!("seq{}", next())));
        });
        group.bench_function("store_16_tasks", |b| {
            b.iter_custom(|iters| {
                rt.block_on(in_parallel(iters, 16, &counter, {
                    let accounts = accounts.clone();
                    move |n| {
                        let accounts = accounts.clone();
                        async move { open_account(&accounts, format!("par{n}")).await }
                    }
                }))
            });
        });
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = append }
criterion_main!(benches);
