//! Reading the whole global log (1,000,000 events by default; `CQRS_BENCH_EVENTS` sets it)
//! beside a raw sequential scan of the same rows, and rebuilding a read model over it, on
//! SQLite and in memory. (PostgreSQL's are in `postgres.rs`, beside its raw sqlx scan.)

use std::time::Duration;

use benches::{RawMemory, RawSqlite, big_log_size, deposit_payload, event_metadata};
use cqrs_core::{EventStore, ExpectedVersion, InMemoryEventStore, Json, NewEvent, StreamId};
use cqrs_store_sqlite::SqliteEventStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: u64 = 1000;

/// `size` deposits in batches of [`BATCH`] over 1,000 accounts.
async fn fill(store: &dyn EventStore, size: u64, payload: &str) {
    for b in 0..size.div_ceil(BATCH) {
        let stream = StreamId::new(format!("account-{}", b % 1000)).expect("stream");
        let events = (0..BATCH.min(size - b * BATCH))
            .map(|_| {
                NewEvent::new("account.deposited", Json::from_stored(payload))
                    .with_metadata(event_metadata())
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .expect("fill");
    }
}

fn read(c: &mut Criterion) {
    let rt = benches::runtime();
    let size = big_log_size();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rt
        .block_on(SqliteEventStore::open(dir.path().join("store.db")))
        .expect("store");
    let raw = RawSqlite::open(&dir.path().join("raw.db"), "FULL");
    let payload = deposit_payload();
    rt.block_on(fill(&store, size, &payload));
    for b in 0..size.div_ceil(BATCH) {
        let count = i64::try_from(BATCH.min(size - b * BATCH)).expect("small");
        let first = i64::try_from(b / 1000 * BATCH + 1).expect("small");
        raw.fill(&format!("account-{}", b % 1000), first, count);
    }

    let mut group = c.benchmark_group("sqlite_full/read_all");
    group.throughput(Throughput::Elements(size));
    group.sample_size(10);
    benches::settle_disk();
    group.bench_function("raw_scan", |b| b.iter(|| assert_eq!(raw.scan(), size)));
    benches::store_log_benches(&mut group, &rt, &store, size);
    group.finish();
}

fn read_memory(c: &mut Criterion) {
    let rt = benches::runtime();
    let size = big_log_size();
    let payload = deposit_payload();
    let store = InMemoryEventStore::new();
    rt.block_on(fill(&store, size, &payload));
    let raw = RawMemory::new();
    for b in 0..size.div_ceil(BATCH) {
        raw.fill(
            &format!("account-{}", b % 1000),
            BATCH.min(size - b * BATCH),
            &payload,
        );
    }
    let mut group = c.benchmark_group("memory/read_all");
    group.throughput(Throughput::Elements(size));
    group.sample_size(10);
    benches::settle_disk();
    group.bench_function("raw_scan", |b| b.iter(|| assert_eq!(raw.scan(), size)));
    benches::store_log_benches(&mut group, &rt, &store, size);
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
}

criterion_group! { name = benches; config = config(); targets = read, read_memory }
criterion_main!(benches);
