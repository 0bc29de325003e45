//! How costs grow: aggregate loads at 10 / 100 / 1,000 / 10,000 prior events with and without
//! snapshots, appends in batches of 1, 10 and 100, commands on new aggregates in memory (1 and
//! 16 tasks), each beside the raw engine (a `Mutex<Vec>`, rusqlite, sqlx) loading or writing
//! the same rows; and the cost of upcasting per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use benches::{
    Account, AccountEvent, RawEvent, RawMemory, RawSqlite, deposit_payload, event_metadata,
};
use cqrs_core::{
    Aggregate, ExpectedVersion, InMemoryEventStore, Json, NewEvent, Position, RecordedEvent,
    Repository, Snapshot, SnapshotPolicy, Storage, StreamId, Upcasters, Version,
};
use cqrs_store_sqlite::SqliteEventStore;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const LENGTHS: [u64; 4] = [10, 100, 1_000, 10_000];

/// An account with `n` events, and (`snapshot`) a snapshot at its last version.
async fn fill(store: &dyn Storage, id: &str, n: u64, snapshot: bool) {
    let stream = Account::stream_id(&id.to_owned()).expect("stream");
    let open = cqrs_core::encode_message(&AccountEvent::opened())
        .expect("encode")
        .1;
    let payload = deposit_payload();
    let mut events = vec![NewEvent::new("account.opened", open).with_metadata(event_metadata())];
    events.extend((1..n).map(|_| {
        NewEvent::new("account.deposited", Json::from_stored(payload.as_str()))
            .with_metadata(event_metadata())
    }));
    for (i, chunk) in events.chunks(1_000).enumerate() {
        let expected = if i == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(Version::new(i as u64 * 1_000))
        };
        store
            .append(&stream, expected, chunk.to_vec())
            .await
            .expect("fill");
    }
    if snapshot {
        store
            .save_snapshot(Snapshot {
                stream,
                version: Version::new(n),
                schema_version: Account::SNAPSHOT_VERSION,
                state: Json::encode(&Account {
                    balance: 100 * (i64::try_from(n).unwrap_or(i64::MAX) - 1),
                })
                .expect("state"),
                taken_at: chrono::Utc::now(),
            })
            .await
            .expect("snapshot");
    }
}

/// The raw engine beside each store in [`load_by_length`].
enum Raw {
    Memory(RawMemory),
    Sqlite(RawSqlite),
    Postgres(sqlx::PgPool),
}

impl Raw {
    async fn fill(&self, stream: &str, n: u64, payload: &str) {
        let count = i64::try_from(n).expect("small");
        match self {
            Raw::Memory(raw) => raw.fill(stream, n, payload),
            Raw::Sqlite(raw) => raw.fill(stream, 1, count),
            Raw::Postgres(raw) => benches::raw_postgres::fill(raw, stream, 1, count).await,
        }
    }

    /// How many events the load folded.
    async fn load(&self, stream: &str) -> u64 {
        match self {
            Raw::Memory(raw) => raw.load(stream).1 as u64,
            Raw::Sqlite(raw) => raw.load(stream).1.unsigned_abs(),
            Raw::Postgres(raw) => benches::raw_postgres::load(raw, stream)
                .await
                .1
                .unsigned_abs(),
        }
    }
}

fn load_by_length(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("dir");
    let sqlite: Arc<dyn Storage> = Arc::new(
        rt.block_on(SqliteEventStore::open(dir.path().join("scaling.db")))
            .expect("store"),
    );
    let memory: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
    let mut engines = vec![
        ("memory", memory, Raw::Memory(RawMemory::new())),
        (
            "sqlite_full",
            sqlite,
            Raw::Sqlite(RawSqlite::open(&dir.path().join("raw.db"), "FULL")),
        ),
    ];
    if let Some((pg, raw)) = benches::postgres_pair(&rt, 4) {
        engines.push(("postgres", Arc::new(pg), Raw::Postgres(raw)));
    }
    let payload = deposit_payload();
    for (engine, store, raw) in engines {
        let plain = Repository::<Account>::new(Arc::clone(&store));
        let snapshotting = Repository::<Account>::new(Arc::clone(&store))
            .with_snapshots(SnapshotPolicy::every(100));
        let mut group = c.benchmark_group(format!("{engine}/load_by_length"));
        for n in LENGTHS {
            rt.block_on(fill(store.as_ref(), &format!("plain{n}"), n, false));
            rt.block_on(fill(store.as_ref(), &format!("snap{n}"), n, true));
            rt.block_on(raw.fill(&format!("raw{n}"), n, &payload));
            group.throughput(Throughput::Elements(n));
            benches::settle_disk();
            group.bench_with_input(BenchmarkId::new("raw", n), &n, |b, n| {
                let stream = format!("raw{n}");
                b.to_async(&rt).iter(|| async {
                    assert_eq!(raw.load(&stream).await, *n);
                });
            });
            benches::settle_disk();
            group.bench_with_input(BenchmarkId::new("no_snapshots", n), &n, |b, n| {
                let id = format!("plain{n}");
                b.to_async(&rt)
                    .iter(|| async { plain.load(&id).await.expect("load") });
            });
            benches::settle_disk();
            group.bench_with_input(BenchmarkId::new("snapshots", n), &n, |b, n| {
                let id = format!("snap{n}");
                b.to_async(&rt)
                    .iter(|| async { snapshotting.load(&id).await.expect("load") });
            });
        }
        group.finish();
    }
}

fn append_batches(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("dir");
    let store = rt
        .block_on(SqliteEventStore::open(dir.path().join("batches.db")))
        .expect("store");
    let raw = RawSqlite::open(&dir.path().join("raw.db"), "FULL");
    let raw_events: Vec<RawEvent> = (0..100)
        .map(|_| RawEvent::new(&AccountEvent::deposited(100)))
        .collect();
    let payload = deposit_payload();
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);
    let mut group = c.benchmark_group("sqlite_full/append_batch");
    for size in [1u64, 10, 100] {
        group.throughput(Throughput::Elements(size));
        benches::settle_disk();
        group.bench_with_input(BenchmarkId::new("raw", size), &size, |b, size| {
            let events = &raw_events[..usize::try_from(*size).expect("small")];
            b.iter(|| {
                raw.append(&format!("raw-{}", next()), 0, events)
                    .expect("new stream")
            });
        });
        benches::settle_disk();
        group.bench_with_input(BenchmarkId::new("store", size), &size, |b, size| {
            b.to_async(&rt).iter(|| {
                benches::append_new_stream(&store, format!("account-{}", next()), *size, &payload)
            });
        });
    }
    group.finish();
}

fn upcasting(c: &mut Criterion) {
    // Version 1 of `account.deposited` had `cents`; version 2 calls it `amount`.
    let upcasters = Upcasters::new().map("account.deposited", 1, |mut payload| {
        if let Some(cents) = payload.get("cents").cloned() {
            payload["amount"] = cents;
        }
        Ok(payload)
    });
    let stored = |version: u16, payload: &str| {
        RecordedEvent::from_new(
            NewEvent::new("account.deposited", Json::from_stored(payload))
                .with_schema_version(version),
            StreamId::new("account-1").expect("stream"),
            Version::START,
            Position::START,
        )
    };
    let current = stored(1, &deposit_payload());
    let old = stored(1, r#"{"cents":100}"#);
    let none = Upcasters::new();
    let mut group = c.benchmark_group("core/decode_per_event");
    group.throughput(Throughput::Elements(1));
    benches::settle_disk();
    group.bench_function("raw_serde", |b| {
        b.iter(|| {
            cqrs_core::decode_message::<AccountEvent>(&current.event_type, current.payload.as_str())
                .expect("decode")
        });
    });
    benches::settle_disk();
    group.bench_function("without_upcasters", |b| {
        b.iter(|| {
            none.decode::<AccountEvent>(&current)
                .expect("decode")
                .count()
        });
    });
    benches::settle_disk();
    group.bench_function("through_an_upcaster", |b| {
        b.iter(|| {
            let decoded: Vec<serde_json::Value> = upcasters
                .upcast(
                    cqrs_core::Upcasted::new(
                        old.event_type.clone(),
                        old.schema_version,
                        old.payload.to_value().expect("json"),
                    ),
                    Some(&old.metadata),
                )
                .expect("upcast")
                .into_iter()
                .map(|u| u.payload)
                .collect();
            decoded
        });
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let rt = benches::runtime();
    let raw = RawMemory::new();
    let payload = deposit_payload();
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);
    let mut group = c.benchmark_group("memory/append_batch");
    for size in [1u64, 10, 100] {
        group.throughput(Throughput::Elements(size));
        benches::settle_disk();
        group.bench_with_input(BenchmarkId::new("raw", size), &size, |b, size| {
            b.iter(|| raw.append_new(&format!("raw-{}", next()), *size, &payload));
        });
        benches::settle_disk();
        group.bench_with_input(BenchmarkId::new("store", size), &size, |b, size| {
            // A fresh store per sample: a full run appends millions of realistic events.
            b.iter_custom(|iters| {
                let store = InMemoryEventStore::new();
                rt.block_on(async {
                    let started = std::time::Instant::now();
                    for _ in 0..iters {
                        let stream = format!("account-{}", next());
                        benches::append_new_stream(&store, stream, *size, &payload).await;
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
    let raw = Arc::new(raw);
    // A fresh store per sample, as above.
    let fresh = || Repository::<Account>::new(Arc::new(InMemoryEventStore::new()));
    let open = cqrs_core::encode_message(&AccountEvent::opened())
        .expect("encode")
        .1;
    let mut group = c.benchmark_group("memory/command_new_aggregate");
    group.throughput(Throughput::Elements(1));
    benches::settle_disk();
    group.bench_function("raw_one_lock_per_command", |b| {
        b.iter(|| raw.command(&format!("raw-{}", next()), open.as_str()));
    });
    benches::settle_disk();
    group.bench_function("store_1_task", |b| {
        b.iter_custom(|iters| {
            let accounts = fresh();
            rt.block_on(async {
                let started = std::time::Instant::now();
                for _ in 0..iters {
                    benches::open_account(&accounts, format!("seq{}", next())).await;
                }
                started.elapsed()
            })
        });
    });
    benches::settle_disk();
    group.bench_function("raw_16_tasks", |b| {
        b.iter_custom(|iters| {
            rt.block_on(benches::in_parallel(iters, 16, &counter, {
                let (raw, open) = (Arc::clone(&raw), open.as_str().to_owned());
                move |n| {
                    let (raw, open) = (Arc::clone(&raw), open.clone());
                    async move { raw.command(&format!("raw-{n}"), &open) }
                }
            }))
        });
    });
    benches::settle_disk();
    group.bench_function("store_16_tasks", |b| {
        b.iter_custom(|iters| {
            rt.block_on(benches::in_parallel(iters, 16, &counter, {
                let accounts = fresh();
                move |n| {
                    let accounts = accounts.clone();
                    async move { benches::open_account(&accounts, format!("par{n}")).await }
                }
            }))
        });
    });
    group.finish();
}

fn postgres_batches(c: &mut Criterion) {
    let rt = benches::runtime();
    let Some((store, raw)) = benches::postgres_pair(&rt, 4) else {
        return;
    };
    let payload = deposit_payload();
    let raw_events: Vec<RawEvent> = (0..100)
        .map(|_| RawEvent::new(&AccountEvent::deposited(100)))
        .collect();
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);
    let mut group = c.benchmark_group("postgres/append_batch");
    for size in [1u64, 10, 100] {
        group.throughput(Throughput::Elements(size));
        benches::settle_disk();
        group.bench_with_input(BenchmarkId::new("raw", size), &size, |b, size| {
            let events = &raw_events[..usize::try_from(*size).expect("small")];
            b.to_async(&rt).iter(|| {
                let stream = format!("raw-{}", next());
                let raw = &raw;
                async move {
                    benches::raw_postgres::append(raw, &stream, 0, events)
                        .await
                        .expect("new stream")
                }
            });
        });
        benches::settle_disk();
        group.bench_with_input(BenchmarkId::new("store", size), &size, |b, size| {
            b.to_async(&rt).iter(|| {
                benches::append_new_stream(&store, format!("account-{}", next()), *size, &payload)
            });
        });
    }
    group.finish();
}

criterion_group!(
    scaling,
    load_by_length,
    append_batches,
    postgres_batches,
    upcasting,
    memory
);
criterion_main!(scaling);
