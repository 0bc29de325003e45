//! Appends and commands on new aggregates, on SQLite at both durabilities, beside the minimal
//! hand-written event store of DESIGN.md §5 (`RawSqlite`) with the same realistic events:
//! sequentially and with 16 concurrent tasks (where group commit shows); and what the message
//! log costs, as the same append with and without the command's record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use benches::{
    Account, AccountCommand, AccountEvent, RawEvent, RawSqlite, in_parallel, open_account,
};
use cqrs_core::{
    CommandEnvelope, CommandRecord, Commit, EventStore, ExpectedVersion, NewEvent, Outcome,
    Repository, StreamId, Version,
};
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

/// A deposit as the store is handed it: realistic payload and metadata.
fn deposit_event() -> NewEvent {
    let (event_type, payload) =
        cqrs_core::encode_message(&AccountEvent::deposited(100)).expect("encodes");
    NewEvent::new(event_type, payload).with_metadata(benches::event_metadata())
}

/// The record the repository would write for the command that caused `event` on `stream`.
fn record(stream: &StreamId, event: &NewEvent) -> CommandRecord {
    let context =
        benches::command_context().with_correlation_id(event.metadata.correlation_id.expect("set"));
    let envelope = CommandEnvelope::new(stream.clone(), &AccountCommand::deposit(100), context)
        .expect("encodes");
    // The event names the command that wrote it, as a repository's events do.
    CommandRecord {
        command_id: event.metadata.command_id.expect("set"),
        ..CommandRecord::from_envelope(
            &envelope,
            event.metadata.recorded_at,
            Outcome::Accepted {
                version: Version::new(1),
                events: 1,
            },
        )
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
        let raw_event = RawEvent::new(&AccountEvent::deposited(100));
        let event = deposit_event();
        let counter = AtomicU64::new(0);
        let next = || counter.fetch_add(1, Ordering::Relaxed);

        let mut group = c.benchmark_group(format!("sqlite_{label}/append_1_event"));
        group.throughput(Throughput::Elements(1));
        benches::settle_disk();
        group.bench_function("raw", |b| {
            b.iter(|| {
                raw.append(
                    &format!("raw-{}", next()),
                    0,
                    std::slice::from_ref(&raw_event),
                )
                .expect("new stream")
            });
        });
        benches::settle_disk();
        group.bench_function("store", |b| {
            b.to_async(&rt).iter(|| {
                let stream = StreamId::new(format!("account-{}", next())).expect("stream");
                let (store, event) = (&store, event.clone());
                async move {
                    store
                        .append(&stream, ExpectedVersion::NoStream, vec![event])
                        .await
                        .expect("append")
                }
            });
        });
        group.finish();

        // The message log's cost on its own: the same one-event append, with and without the
        // command's record committed beside it.
        let mut group = c.benchmark_group(format!("sqlite_{label}/message_log"));
        group.throughput(Throughput::Elements(1));
        for with_record in [false, true] {
            let name = if with_record {
                "append_with_record"
            } else {
                "append_without_record"
            };
            benches::settle_disk();
            group.bench_function(name, |b| {
                b.to_async(&rt).iter(|| {
                    let stream = StreamId::new(format!("account-{}", next())).expect("stream");
                    let event = deposit_event();
                    let mut commit = Commit::new(stream.clone(), ExpectedVersion::NoStream, vec![]);
                    if with_record {
                        commit = commit.with_command(record(&stream, &event));
                    }
                    commit.events.push(event);
                    let store = &store;
                    async move { store.commit(commit).await.expect("commit") }
                });
            });
        }
        // And with the message log indexed by correlation id (an option, off by default).
        let indexed = rt
            .block_on(SqliteEventStore::open_with(
                dir.path().join("indexed.db"),
                options.with_correlation_index(true),
            ))
            .expect("store");
        benches::settle_disk();
        group.bench_function("append_with_record_correlation_index", |b| {
            b.to_async(&rt).iter(|| {
                let stream = StreamId::new(format!("account-{}", next())).expect("stream");
                let event = deposit_event();
                let commit = Commit::new(stream.clone(), ExpectedVersion::NoStream, vec![])
                    .with_command(record(&stream, &event));
                let indexed = &indexed;
                async move {
                    let mut commit = commit;
                    commit.events.push(event);
                    indexed.commit(commit).await.expect("commit")
                }
            });
        });
        group.finish();

        let accounts = Repository::<Account>::new(Arc::new(store.clone()));
        let open = AccountCommand::open();
        let mut group = c.benchmark_group(format!("sqlite_{label}/command_new_aggregate"));
        group.throughput(Throughput::Elements(1));
        benches::settle_disk();
        group.bench_function("raw", |b| {
            b.iter(|| raw.command(&format!("raw-{}", next()), &open));
        });
        benches::settle_disk();
        group.bench_function("store_1_task", |b| {
            b.to_async(&rt)
                .iter(|| open_account(&accounts, format!("seq{}", next())));
        });
        // The same command from a repository that keeps no message log (what the opt-out buys).
        let unlogged = accounts.clone().without_message_log();
        benches::settle_disk();
        group.bench_function("store_1_task_without_message_log", |b| {
            b.to_async(&rt)
                .iter(|| open_account(&unlogged, format!("unlogged{}", next())));
        });
        benches::settle_disk();
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
