//! The PostgreSQL store beside the minimal hand-written event store of DESIGN.md §5 on sqlx
//! (`raw_postgres`), with the same realistic events, on a throwaway
//! server with PostgreSQL's durable defaults (`fsync=on`, `synchronous_commit=on`): commands on
//! new aggregates (1 task, 16 tasks), a command on an aggregate with 1,000 prior events (with
//! snapshots), the load of a 100-event stream, `read_all` and a read model's rebuild over
//! the whole log, and commits in order as a store migration copies a log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use benches::{
    Account, AccountCommand, AccountEvent, big_log_size, deposit_payload, event_metadata,
    in_parallel, open_account, raw_postgres,
};
use cqrs_core::{
    Aggregate, EventStore, ExpectedVersion, Json, NewEvent, Repository, Snapshot, SnapshotPolicy,
    SnapshotStore, StreamId, Version,
};
use cqrs_store_postgres::{PostgresEventStore, PostgresOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TASKS: u64 = 16;

fn postgres(c: &mut Criterion) {
    let rt = benches::runtime();
    let options =
        PostgresOptions::default().with_max_connections(u32::try_from(TASKS + 4).expect("small"));
    let Some((store, raw)) =
        benches::postgres_pair_with(&rt, options, u32::try_from(TASKS).expect("small"))
    else {
        return;
    };
    let open = cqrs_core::encode_message(&AccountEvent::opened())
        .expect("encode")
        .1;
    let open_command = AccountCommand::open();
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);

    let accounts = Repository::<Account>::new(Arc::new(store.clone()));
    // No `settle` here: analyzing the empty tables would plan their statements for empty
    // tables, and those plans would scan the whole table as it grows (until autovacuum
    // analyzes again).
    let mut group = c.benchmark_group("postgres/command_new_aggregate");
    group.throughput(Throughput::Elements(1));
    benches::settle_disk();
    group.bench_function("raw", |b| {
        b.to_async(&rt).iter(|| {
            let stream = format!("raw-{}", next());
            let (raw, open) = (&raw, &open_command);
            async move { raw_postgres::command(raw, &stream, open).await }
        });
    });
    benches::settle_disk();
    group.bench_function("store_1_task", |b| {
        b.to_async(&rt)
            .iter(|| open_account(&accounts, format!("seq{}", next())));
    });
    benches::settle_disk();
    group.bench_function("raw_16_connections", |b| {
        b.iter_custom(|iters| {
            rt.block_on(in_parallel(iters, TASKS, &counter, {
                let (raw, open) = (raw.clone(), open_command.clone());
                move |n| {
                    let (raw, open) = (raw.clone(), open.clone());
                    async move {
                        raw_postgres::command(&raw, &format!("raw-{n}"), &open).await;
                    }
                }
            }))
        });
    });
    benches::settle_disk();
    group.bench_function("store_16_tasks", |b| {
        b.iter_custom(|iters| {
            rt.block_on(in_parallel(iters, TASKS, &counter, {
                let accounts = accounts.clone();
                move |n| {
                    let accounts = accounts.clone();
                    async move { open_account(&accounts, format!("par{n}")).await }
                }
            }))
        });
    });
    group.finish();

    // An account with 1,000 events, snapshotted at 1,000 as the policy would have.
    let snapshotting = Repository::<Account>::new(Arc::new(store.clone()))
        .with_snapshots(SnapshotPolicy::every(100));
    let busy = "busy".to_owned();
    let payload = deposit_payload();
    rt.block_on(async {
        let stream = Account::stream_id(&busy).expect("stream");
        let events = history(&open, &payload, 1000);
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await
            .expect("fill");
        store
            .save_snapshot(Snapshot {
                stream,
                version: Version::new(1000),
                schema_version: Account::SNAPSHOT_VERSION,
                state: Json::encode(&Account { balance: 99_900 }).expect("state"),
                taken_at: chrono::Utc::now(),
            })
            .await
            .expect("snapshot");
    });
    rt.block_on(settle(&raw));
    let mut group = c.benchmark_group("postgres/snapshots");
    group.throughput(Throughput::Elements(1));
    benches::settle_disk();
    group.bench_function("new_aggregate", |b| {
        b.to_async(&rt)
            .iter(|| open_account(&snapshotting, format!("new{}", next())));
    });
    benches::settle_disk();
    group.bench_function("1000_prior_events_with_snapshots", |b| {
        b.to_async(&rt).iter(|| async {
            snapshotting
                .handle_with(
                    &busy,
                    AccountCommand::deposit(1),
                    benches::command_context(),
                )
                .await
                .expect("deposit")
        });
    });
    group.finish();

    let hundred = "hundred".to_owned();
    rt.block_on(async {
        let events = history(&open, &payload, 100);
        store
            .append(
                &Account::stream_id(&hundred).expect("stream"),
                ExpectedVersion::NoStream,
                events,
            )
            .await
            .expect("fill");
        raw_postgres::fill(&raw, "account-hundred", 1, 100).await;
    });
    rt.block_on(settle(&raw));
    let mut group = c.benchmark_group("postgres/load_100_events");
    group.throughput(Throughput::Elements(100));
    benches::settle_disk();
    group.bench_function("raw", |b| {
        b.to_async(&rt)
            .iter(|| async { assert_eq!(raw_postgres::load(&raw, "account-hundred").await.1, 100) })
    });
    benches::settle_disk();
    group.bench_function("store", |b| {
        b.to_async(&rt)
            .iter(|| async { accounts.load(&hundred).await.expect("load") })
    });
    group.finish();

    // The whole log: whatever the command benchmarks wrote plus `CQRS_BENCH_EVENTS` more.
    let size = big_log_size();
    rt.block_on(async {
        const BATCH: u64 = 10_000;
        for b in 0..size.div_ceil(BATCH) {
            let count = BATCH.min(size - b * BATCH);
            let stream = StreamId::new(format!("account-bulk{}", b % 100)).expect("stream");
            let events = (0..count)
                .map(|_| {
                    NewEvent::new("account.deposited", Json::from_stored(payload.as_str()))
                        .with_metadata(event_metadata())
                })
                .collect();
            store
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .expect("fill");
            let first = i64::try_from(b / 100 * BATCH + 1).expect("small");
            raw_postgres::fill(
                &raw,
                &format!("account-bulk{}", b % 100),
                first,
                i64::try_from(count).expect("small"),
            )
            .await;
        }
        settle(&raw).await;
    });
    let store_total = rt.block_on(benches::read_whole_log(&store));
    let raw_total = rt.block_on(raw_postgres::scan(&raw));
    let mut group = c.benchmark_group("postgres/read_all");
    group.throughput(Throughput::Elements(store_total));
    group.sample_size(10);
    benches::settle_disk();
    group.bench_function("raw_scan", |b| {
        b.to_async(&rt)
            .iter(|| async { assert_eq!(raw_postgres::scan(&raw).await, raw_total) })
    });
    benches::store_log_benches(&mut group, &rt, &store, store_total);
    group.finish();

    commit_in_order(c, &rt, &store, &raw);
}

/// Commits in one list, as a store migration copies a log: lists of [`COPY_LIST`] commits
/// of one event each over 1,000 streams taking turns (an interleaved log's shape), set-based
/// (`commit_in_order`) beside the same commits one by one (`EventStore::commit`, what the
/// trait's default does) and the minimal store's one `INSERT` of the same rows.
fn commit_in_order(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    store: &PostgresEventStore,
    raw: &sqlx::PgPool,
) {
    const COPY_LIST: usize = 1_000;
    let deposit = Json::from_stored(deposit_payload().as_str());
    let versions = std::sync::Mutex::new(vec![0_u64; COPY_LIST]);
    let list = |prefix: &str| -> Vec<cqrs_core::Commit> {
        let mut versions = versions.lock().expect("versions");
        (0..COPY_LIST)
            .map(|k| {
                let stream = StreamId::new(format!("{prefix}-{k}")).expect("stream");
                let expected = match versions[k] {
                    0 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(Version::new(v)),
                };
                versions[k] += 1;
                let event = NewEvent::new("account.deposited", deposit.clone())
                    .with_metadata(event_metadata());
                cqrs_core::Commit::new(stream, expected, vec![event])
            })
            .collect()
    };
    let mut group = c.benchmark_group("postgres/commit_in_order");
    group.throughput(Throughput::Elements(COPY_LIST as u64));
    group.sample_size(10);
    let raw_versions = std::sync::Mutex::new(0_i64);
    let event = benches::RawEvent::new(&AccountEvent::deposited(100));
    benches::settle_disk();
    group.bench_function("raw_one_insert", |b| {
        b.to_async(rt).iter(|| {
            let version = {
                let mut v = raw_versions.lock().expect("versions");
                *v += 1;
                *v
            };
            let rows: Vec<_> = (0..COPY_LIST)
                .map(|k| (format!("copy-raw-{k}"), version, event.clone()))
                .collect();
            async move { raw_postgres::copy(raw, &rows).await }
        });
    });
    benches::settle_disk();
    group.bench_function("store_in_order", |b| {
        b.to_async(rt).iter(|| {
            let commits = list("copy-set");
            async move { store.commit_in_order(commits).await.expect("copy") }
        });
    });
    versions.lock().expect("versions").fill(0);
    benches::settle_disk();
    group.bench_function("store_one_by_one", |b| {
        b.to_async(rt).iter(|| {
            let commits = list("copy-one");
            async move {
                for commit in commits {
                    store.commit(commit).await.expect("copy");
                }
            }
        });
    });
    group.finish();
}

/// An account's history of `n` events (opened, then deposits), as the store is handed it.
fn history(open: &Json, deposit: &str, n: usize) -> Vec<NewEvent> {
    let mut events =
        vec![NewEvent::new("account.opened", open.clone()).with_metadata(event_metadata())];
    events.extend((1..n).map(|_| {
        NewEvent::new("account.deposited", Json::from_stored(deposit))
            .with_metadata(event_metadata())
    }));
    events
}

/// Vacuums, analyzes and checkpoints, so that a group is not measured while autovacuum or
/// the checkpointer deal with the rows an earlier one wrote. The kernel's writeback is
/// flushed before every benchmark function instead ([`benches::settle_disk`]): without that
/// flush, the side measured second paid for writing back what the first had written
/// (`docs/benchmarks-notes.md`, 2026-12-06).
async fn settle(pool: &sqlx::PgPool) {
    for statement in ["VACUUM ANALYZE", "CHECKPOINT"] {
        sqlx::query(statement).execute(pool).await.expect("settle");
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = postgres }
criterion_main!(benches);
