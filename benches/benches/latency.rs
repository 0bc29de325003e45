//! Subscriber latency: from an append returning to a live projection having applied it, on
//! the in-memory store and on SQLite (the p50 and p99 of every iteration are written beside
//! criterion's results, for the report).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_core::{ExpectedVersion, Json, MemoryProjection, NewEvent, ProjectionRunner, StreamId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The `per_mille`‰ value of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = (sorted.len() - 1) * per_mille / 1000;
    sorted[index.min(sorted.len() - 1)]
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn latency(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("dir");
    for (engine, store) in benches::stores(&rt, dir.path(), "latency.db") {
        let count = Arc::new(MemoryProjection::new("count", 0u64, |n, _| {
            *n += 1;
            Ok(())
        }));
        let live = {
            let _guard = rt.enter();
            ProjectionRunner::new(
                Arc::clone(&store) as Arc<dyn cqrs_core::EventReader>,
                count.clone(),
            )
            .spawn()
        };
        let seen: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let stream = StreamId::new("latency-1").expect("stream");
        let mut group = c.benchmark_group(format!("{engine}/subscriber_latency"));
        group.throughput(Throughput::Elements(1));
        benches::settle_disk();
        group.bench_function("append_to_projection", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let appended = store
                            .append(
                                &stream,
                                ExpectedVersion::Any,
                                vec![NewEvent::new("e", Json::null())],
                            )
                            .await
                            .expect("append");
                        live.wait_for(appended.position.expect("position"))
                            .await
                            .expect("live");
                        let took = started.elapsed();
                        total += took;
                        seen.lock().expect("lock").push(took);
                    }
                    total
                })
            });
        });
        group.finish();
        rt.block_on(live.stop());
        let mut all = seen.lock().expect("lock").clone();
        all.sort();
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/criterion")
            .join(format!("{engine}_subscriber_latency"));
        let _ = std::fs::create_dir_all(&out);
        let _ = std::fs::write(
            out.join("percentiles.json"),
            serde_json::json!({
                "group": format!("{engine}/subscriber_latency"),
                "samples": all.len(),
                "p50_ns": nanos(percentile(&all, 500)),
                "p99_ns": nanos(percentile(&all, 990)),
            })
            .to_string(),
        );
    }
}

criterion_group!(benches, latency);
criterion_main!(benches);
