//! Crash safety: a child process appends in batches and is killed with SIGKILL at random
//! moments; every acknowledged append must survive, no batch may be partial, and the file
//! must open cleanly afterwards.
//!
//! The test binary is its own child: run with `CQRS_CRASH_CHILD` set, the `child` test
//! appends until it is killed.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cqrs_core::{EventReader, EventStore, ExpectedVersion, Json, NewEvent, Position, StreamId};
use cqrs_store_sqlite::SqliteEventStore;
use rand::Rng;

const CHILD_DB: &str = "CQRS_CRASH_CHILD";
const CHILD_FIRST: &str = "CQRS_CRASH_FIRST";
const BATCH: u64 = 7;
const WRITERS: u64 = 8;
const ROUNDS: usize = 10;

/// The child: appends batches of [`BATCH`] events from [`WRITERS`] concurrent tasks (so group
/// commit is at work) and prints `ACK <batch>` once each append has returned.
#[test]
fn child() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let first: u64 = std::env::var(CHILD_FIRST).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteEventStore::open(&path).await.unwrap();
        let (acks, printed) = mpsc::channel::<u64>();
        std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            for batch in printed {
                writeln!(out, "ACK {batch}").unwrap();
                out.flush().unwrap();
            }
        });
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, acks) = (store.clone(), acks.clone());
                tokio::spawn(async move {
                    for i in 0.. {
                        let batch = first + i * WRITERS + w;
                        let stream = StreamId::new(format!("batch-{batch}")).unwrap();
                        let events = (0..BATCH)
                            .map(|k| {
                                NewEvent::new(
                                    "crash.item",
                                    Json::encode(&serde_json::json!({ "batch": batch, "k": k }))
                                        .unwrap(),
                                )
                            })
                            .collect();
                        store
                            .append(&stream, ExpectedVersion::NoStream, events)
                            .await
                            .unwrap();
                        acks.send(batch).unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn killed_appenders_lose_no_acknowledged_batch() {
    if std::env::var(CHILD_DB).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut rng = rand::rng();
    let mut acknowledged = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DB, &path)
            .env(CHILD_FIRST, (round as u64 * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, acks) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(batch) = line.strip_prefix("ACK ") {
                    let _ = lines.send(batch.parse::<u64>().unwrap());
                }
            }
        });
        // Kill at a random moment: after a random number of acknowledgements, or a random time.
        let target = rng.random_range(1..400);
        let deadline = std::time::Instant::now() + Duration::from_millis(rng.random_range(20..400));
        let mut seen = 0;
        while seen < target && std::time::Instant::now() < deadline {
            match acks.recv_timeout(Duration::from_millis(5)) {
                Ok(batch) => {
                    acknowledged.insert(batch);
                    seen += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the child stopped by itself"),
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        reader.join().unwrap();
        // Acknowledgements printed before the kill count too.
        acknowledged.extend(acks.try_iter());
        verify(&path, &acknowledged);
    }
    eprintln!(
        "{} acknowledged batches across {ROUNDS} kills",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() > ROUNDS,
        "the children acknowledged appends"
    );
}

fn verify(path: &std::path::Path, acknowledged: &BTreeSet<u64>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteEventStore::open(path)
            .await
            .expect("the store opens cleanly after a kill");
        let mut per_batch: HashMap<u64, u64> = HashMap::new();
        let mut from = Position::START;
        let mut last = Position::ZERO;
        loop {
            let page = store.read_all(from, 5_000).await.expect("the log reads");
            let Some(tail) = page.last() else { break };
            from = tail.position.next();
            for event in &page {
                assert!(event.position > last, "positions go forward");
                last = event.position;
                if event.stream.category() != "batch" {
                    continue;
                }
                let batch: u64 = event.stream.local_id().unwrap().parse().unwrap();
                *per_batch.entry(batch).or_default() += 1;
            }
        }
        for (batch, count) in &per_batch {
            assert_eq!(*count, BATCH, "batch {batch} is partial");
        }
        for batch in acknowledged {
            assert!(
                per_batch.contains_key(batch),
                "acknowledged batch {batch} was lost"
            );
        }
        store
            .append(
                &StreamId::new("probe-1").unwrap(),
                ExpectedVersion::Any,
                vec![NewEvent::new("probe", Json::null())],
            )
            .await
            .expect("the store takes appends after a kill");
    });
}
