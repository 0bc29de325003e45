//! The NATS JetStream store beside a minimal hand-written event store on async-nats
//! (`raw_nats`), with the same realistic events, on throwaway clusters of 1 and 3 nodes (each
//! stream with as many replicas) with `sync_interval: always` (an fsync per write on every
//! replica): commands on new aggregates (1 task, 16 tasks), the load of a 100-event stream,
//! and `read_all` and a read model's rebuild over the whole log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use benches::raw_nats::RawNats;
use benches::{
    Account, AccountCommand, AccountEvent, big_log_size, deposit_payload, event_metadata,
    in_parallel, open_account,
};
use cqrs_core::{Aggregate, EventStore, ExpectedVersion, Json, NewEvent, Repository, StreamId};
use cqrs_store_nats::testing::cluster;
use cqrs_store_nats::{NatsEventStore, NatsOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TASKS: u64 = 16;

fn nats(c: &mut Criterion) {
    for nodes in [1, 3] {
        let Some(cluster) = cluster(nodes) else {
            return;
        };
        let engine = if nodes == 1 {
            "nats_1_node"
        } else {
            "nats_3_nodes"
        };
        let rt = benches::runtime();
        let urls = cluster.urls();
        let store = rt
            .block_on(NatsEventStore::connect(
                &urls,
                NatsOptions::default()
                    .with_replicas(nodes)
                    .with_timeout(Duration::from_secs(30)),
            ))
            .expect("store");
        let raw = rt.block_on(RawNats::connect(&urls, nodes)).expect("raw");
        let open_command = AccountCommand::open();
        let counter = AtomicU64::new(0);
        let next = || counter.fetch_add(1, Ordering::Relaxed);
        let accounts = Repository::<Account>::new(Arc::new(store.clone()));

        let mut group = c.benchmark_group(format!("{engine}/command_new_aggregate"));
        group.throughput(Throughput::Elements(1));
        benches::settle_disk();
        group.bench_function("raw", |b| {
            b.to_async(&rt).iter(|| {
                let stream = format!("raw-{}", next());
                let (raw, open) = (&raw, &open_command);
                async move { raw.command(&stream, open).await.expect("raw command") }
            });
        });
        benches::settle_disk();
        group.bench_function("store_1_task", |b| {
            b.to_async(&rt)
                .iter(|| open_account(&accounts, format!("seq{}", next())));
        });
        benches::settle_disk();
        group.bench_function("raw_16_tasks", |b| {
            b.iter_custom(|iters| {
                rt.block_on(in_parallel(iters, TASKS, &counter, {
                    let (raw, open) = (raw.clone(), open_command.clone());
                    move |n| {
                        let (raw, open) = (raw.clone(), open.clone());
                        async move {
                            raw.command(&format!("raw-{n}"), &open)
                                .await
                                .expect("raw command");
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

        let open = cqrs_core::encode_message(&AccountEvent::opened())
            .expect("encode")
            .1;
        let payload = deposit_payload();
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
            raw.fill("account-hundred", 1, 100).await.expect("raw fill");
        });
        let mut group = c.benchmark_group(format!("{engine}/load_100_events"));
        group.throughput(Throughput::Elements(100));
        benches::settle_disk();
        group.bench_function("raw", |b| {
            b.to_async(&rt).iter(|| async {
                assert_eq!(raw.load("account-hundred").await.expect("load").1, 100);
            });
        });
        benches::settle_disk();
        group.bench_function("store", |b| {
            b.to_async(&rt)
                .iter(|| async { accounts.load(&hundred).await.expect("load") });
        });
        group.finish();

        // The whole log: whatever the command benchmarks wrote plus `CQRS_BENCH_EVENTS` more,
        // in commits of 900 events (an atomic batch holds 1,000 messages).
        let size = big_log_size();
        rt.block_on(async {
            const BATCH: u64 = 900;
            for b in 0..size.div_ceil(BATCH) {
                let count = BATCH.min(size - b * BATCH);
                let stream = format!("account-bulk{}", b % 100);
                let events = (0..count)
                    .map(|_| {
                        NewEvent::new("account.deposited", Json::from_stored(payload.as_str()))
                            .with_metadata(event_metadata())
                    })
                    .collect();
                store
                    .append(
                        &StreamId::new(stream.clone()).expect("stream"),
                        ExpectedVersion::Any,
                        events,
                    )
                    .await
                    .expect("fill");
                raw.fill(&stream, 2 + b / 100 * BATCH, count)
                    .await
                    .expect("raw fill");
            }
        });
        let store_total = rt.block_on(benches::read_whole_log(&store));
        let raw_total = rt.block_on(raw.scan()).expect("scan");
        let mut group = c.benchmark_group(format!("{engine}/read_all"));
        group.throughput(Throughput::Elements(store_total));
        group.sample_size(10);
        benches::settle_disk();
        group.bench_function("raw_scan", |b| {
            b.to_async(&rt)
                .iter(|| async { assert_eq!(raw.scan().await.expect("scan"), raw_total) });
        });
        benches::store_log_benches(&mut group, &rt, &store, store_total);
        group.finish();
        drop(store);
        drop(raw);
        drop(rt);
        drop(cluster);
    }
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

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = nats }
criterion_main!(benches);
