//! Loading aggregates, on SQLite, beside the minimal hand-written event store of DESIGN.md §5
//! (`RawSqlite`) with the same realistic events: commands on aggregates of 100 and 1,000 events
//! without snapshots (both durabilities) and with the repository's state cache, the load of a
//! 100-event stream, and a command on an aggregate of 1,000 events with snapshots and with the
//! cache beside one on a new aggregate.
//!
//! A command appends an event, so the aggregates grow while they are measured: each length
//! has a pool of aggregates taken in turn, large enough that none grows by more than a few
//! percent over a run (`docs/benchmarks-notes.md` states the figures).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use benches::{Account, AccountCommand, RawSqlite, open_account};
use cqrs_core::{Aggregate, Repository, Snapshot, SnapshotPolicy, SnapshotStore, Version};
use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// How many aggregates of `length` events a command benchmark takes in turn: about 500,000
/// events per side at the full size (`CQRS_BENCH_EVENTS` scales it down).
fn pool_size(length: u64) -> u64 {
    (benches::big_log_size() / 2 / length).clamp(4, 5_000)
}

fn commands_on_aggregates(c: &mut Criterion) {
    let rt = benches::runtime();
    for (durability, synchronous, label) in [
        (Durability::Full, "FULL", "full"),
        (Durability::Normal, "NORMAL", "normal"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = rt
            .block_on(SqliteEventStore::open_with(
                dir.path().join("store.db"),
                SqliteOptions::default().with_durability(durability),
            ))
            .expect("store");
        let raw = RawSqlite::open(&dir.path().join("raw.db"), synchronous);
        let accounts = Repository::<Account>::new(Arc::new(store.clone()));
        // Large enough for every aggregate of both pools.
        let cached = accounts.clone().with_cache(20_000);
        let deposit = AccountCommand::deposit(100);
        let mut group = c.benchmark_group(format!("sqlite_{label}/command_on_aggregate"));
        group.throughput(Throughput::Elements(1));
        for length in [100u64, 1_000] {
            let pool = pool_size(length);
            let length_i = i64::try_from(length).expect("small");
            rt.block_on(async {
                for i in 0..pool {
                    benches::fill_account(&store, &format!("{length}-{i}"), length).await;
                }
            });
            for i in 0..pool {
                raw.fill(&format!("account-{length}-{i}"), 1, length_i);
            }
            let turn = AtomicU64::new(0);
            let next = || turn.fetch_add(1, Ordering::Relaxed) % pool;
            benches::settle_disk();
            group.bench_with_input(BenchmarkId::new("raw", length), &length, |b, _| {
                b.iter(|| raw.command(&format!("account-{length}-{}", next()), &deposit));
            });
            for (name, repository) in [("store", &accounts), ("store_cached", &cached)] {
                benches::settle_disk();
                group.bench_with_input(BenchmarkId::new(name, length), &length, |b, _| {
                    b.to_async(&rt).iter(|| {
                        let id = format!("{length}-{}", next());
                        let deposit = deposit.clone();
                        async move {
                            repository
                                .handle_with(&id, deposit, benches::command_context())
                                .await
                                .expect("deposit")
                        }
                    });
                });
            }
        }
        group.finish();
    }
}

fn loads(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rt
        .block_on(SqliteEventStore::open(dir.path().join("store.db")))
        .expect("store");
    let raw = RawSqlite::open(&dir.path().join("raw.db"), "FULL");

    // A 100-event stream, loaded whole.
    let hundred = "hundred".to_owned();
    let plain = Repository::<Account>::new(Arc::new(store.clone()));
    rt.block_on(benches::fill_account(&store, &hundred, 100));
    raw.fill("account-hundred", 1, 100);
    let mut group = c.benchmark_group("sqlite_full/load_100_events");
    group.throughput(Throughput::Elements(100));
    benches::settle_disk();
    group.bench_function("raw", |b| {
        b.iter(|| assert_eq!(raw.load("account-hundred").1, 100));
    });
    benches::settle_disk();
    group.bench_function("store", |b| {
        b.to_async(&rt).iter(|| async {
            let loaded = plain.load(&hundred).await.expect("load");
            assert_eq!(loaded.version, Version::new(100));
        });
    });
    group.finish();

    // An account with 1,000 events, snapshotted at 1,000 as the policy would have.
    let accounts = Repository::<Account>::new(Arc::new(store.clone()))
        .with_snapshots(SnapshotPolicy::every(100));
    let cached = Repository::<Account>::new(Arc::new(store.clone())).with_cache(1_000);
    let busy = "busy".to_owned();
    rt.block_on(async {
        benches::fill_account(&store, &busy, 1_000).await;
        store
            .save_snapshot(Snapshot {
                stream: Account::stream_id(&busy).expect("stream"),
                version: Version::new(1000),
                schema_version: Account::SNAPSHOT_VERSION,
                state: cqrs_core::Json::encode(&Account { balance: 999 * 100 }).expect("state"),
                taken_at: chrono::Utc::now(),
            })
            .await
            .expect("snapshot");
    });
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("sqlite_full/snapshots");
    group.throughput(Throughput::Elements(1));
    benches::settle_disk();
    group.bench_function("new_aggregate", |b| {
        b.to_async(&rt).iter(|| {
            open_account(
                &accounts,
                format!("new{}", counter.fetch_add(1, Ordering::Relaxed)),
            )
        });
    });
    // The same aggregate without snapshots, its state kept by the repository's cache: the
    // first command loads the 1,000 events, the others start from the cached state.
    for (name, repository) in [
        ("1000_prior_events_with_snapshots", &accounts),
        ("1000_prior_events_cached", &cached),
    ] {
        benches::settle_disk();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                repository
                    .handle_with(
                        &busy,
                        AccountCommand::deposit(1),
                        benches::command_context(),
                    )
                    .await
                    .expect("deposit")
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = loads, commands_on_aggregates }
criterion_main!(benches);
