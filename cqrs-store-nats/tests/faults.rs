//! The store under faults, on a 3-node cluster with three replicas: its log's leader killed
//! (SIGKILL) during concurrent commits, a node hung (SIGSTOP) then resumed, the whole cluster
//! restarted. Nothing acknowledged is lost, nothing is stored twice, no commit is stored in
//! part, a writer sees success or a retriable error, a command retried with its id after an
//! error never runs twice, and a live subscriber and a projection runner see every event once,
//! in order, across all of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cqrs_core::{
    CommandRecord, Commit, EventFilter, EventReader, EventStore, ExpectedVersion, Json,
    MemoryProjection, MessageLog, NewEvent, Outcome, Position, ProjectionRunner, RecordedEvent,
    StoreError, StreamId, Version,
};
use cqrs_store_nats::testing::{Cluster, cluster};
use cqrs_store_nats::{NatsEventStore, NatsOptions};
use futures::StreamExt;

const WRITERS: u64 = 8;
const PER_WRITER: u64 = 150;
const EVENTS_PER_COMMIT: u64 = 3;
/// How long one commit may keep failing before the test gives up on the cluster.
const GIVE_UP: Duration = Duration::from_secs(90);

fn options() -> NatsOptions {
    NatsOptions::default()
        .with_stream_prefix("FAULTS")
        .with_subject_prefix("faults")
        .with_replicas(3)
}

/// What the writers saw.
#[derive(Default)]
struct Tally {
    attempted: AtomicU64,
    acknowledged: AtomicU64,
    /// Commits refused as duplicates on a retry after an error: the first try was stored and
    /// its answer lost.
    stored_before: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    longest_ms: AtomicU64,
}

fn command_id(w: u64, n: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128((u128::from(w) << 64) | u128::from(n) | (7 << 120))
}

fn commit(w: u64, n: u64) -> Commit {
    let stream = StreamId::new(format!("order-{w}x{}", n % 10)).unwrap();
    let events = (0..EVENTS_PER_COMMIT)
        .map(|i| {
            NewEvent::new(
                "order.step",
                Json::parse(format!(r#"{{"w":{w},"n":{n},"i":{i}}}"#)).unwrap(),
            )
        })
        .collect();
    let record = CommandRecord {
        command_id: command_id(w, n),
        command_type: "order.advance".into(),
        target: stream.clone(),
        payload: Json::null(),
        correlation_id: None,
        causation_id: None,
        recorded_at: chrono::Utc::now(),
        headers: Default::default(),
        outcome: Outcome::Accepted {
            version: Version::new(0),
            events: EVENTS_PER_COMMIT,
        },
    };
    Commit::new(stream, ExpectedVersion::Any, events).with_command(record)
}

/// One writer: its commits one after another, each retried with its command id after an
/// error until acknowledged, or recognised as stored by an earlier try.
async fn write(store: NatsEventStore, w: u64, tally: Arc<Tally>) {
    for n in 0..PER_WRITER {
        let started = Instant::now();
        let mut failed_before = false;
        loop {
            tally.attempted.fetch_add(1, Ordering::Relaxed);
            match store.commit(commit(w, n)).await {
                Ok(_) => break,
                Err(StoreError::DuplicateCommand { command_id: id }) => {
                    assert!(
                        failed_before,
                        "writer {w} commit {n}: a duplicate on the first try"
                    );
                    assert_eq!(id, command_id(w, n));
                    tally.stored_before.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(err) => {
                    assert!(
                        matches!(err, StoreError::Backend(_)),
                        "writer {w} commit {n}: not a retriable error: {err:?}"
                    );
                    assert!(
                        started.elapsed() < GIVE_UP,
                        "writer {w} commit {n} failed for {GIVE_UP:?}: {err}"
                    );
                    let kind = cause(&err);
                    *tally.errors.lock().unwrap().entry(kind).or_default() += 1;
                    failed_before = true;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        tally.acknowledged.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tally.longest_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// The innermost cause of an error, shortened: to count errors by kind.
fn cause(err: &StoreError) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(next) = source.source() {
        source = next;
    }
    let text = source.to_string();
    text.chars().take(60).collect()
}

/// A live subscriber that, as a real consumer does, subscribes again from where it was after
/// an error: every event it was given, in order.
fn subscriber(
    store: NatsEventStore,
    seen: Arc<Mutex<Vec<Position>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = Position::START;
        loop {
            let mut live = store.subscribe(next, EventFilter::all());
            while let Some(item) = live.next().await {
                match item {
                    Ok(event) => {
                        assert!(event.position >= next, "the subscription went back");
                        next = event.position.next();
                        seen.lock().unwrap().push(event.position);
                    }
                    Err(_) => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The node that leads the log now.
async fn log_leader(js: &jetstream::Context, cluster: &Cluster) -> Option<usize> {
    let mut log = js.get_stream("FAULTS_LOG").await.ok()?;
    let info = log.info().await.ok()?;
    let name = info.cluster.as_ref()?.leader.clone()?;
    cluster.node_named(&name)
}

async fn until_acknowledged(tally: &Tally, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while tally.acknowledged.load(Ordering::Relaxed) < count {
        assert!(
            Instant::now() < deadline,
            "the writers stalled at {} of {count} acknowledged; errors: {:?}",
            tally.acknowledged.load(Ordering::Relaxed),
            tally.errors.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_or_doubled_across_kills_hangs_and_restarts() {
    let Some(mut cluster) = cluster(3) else {
        return;
    };
    let store = NatsEventStore::connect(&cluster.urls(), options())
        .await
        .expect("the store opens");
    let js = jetstream::new(store.client().clone());

    let seen = Arc::new(Mutex::new(Vec::new()));
    let live = subscriber(store.clone(), Arc::clone(&seen));
    let projected = Arc::new(MemoryProjection::new(
        "positions",
        Vec::<Position>::new(),
        |positions, event: &RecordedEvent| {
            positions.push(event.position);
            Ok(())
        },
    ));
    let runner = ProjectionRunner::new(Arc::new(store.clone()), projected.clone())
        .with_retry_delay(Duration::from_millis(100))
        .spawn();

    let tally = Arc::new(Tally::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(store.clone(), w, Arc::clone(&tally))))
        .collect();
    let total = WRITERS * PER_WRITER;

    // 1. The log's leader killed a quarter of the way through, and brought back.
    until_acknowledged(&tally, total / 4).await;
    let leader = log_leader(&js, &cluster)
        .await
        .expect("the log has a leader");
    tokio::task::block_in_place(|| cluster.kill(leader));
    let killed_at = Instant::now();
    let acked = tally.acknowledged.load(Ordering::Relaxed);
    until_acknowledged(&tally, (acked + 20).min(total)).await;
    let kill_recovery = killed_at.elapsed();
    tokio::task::block_in_place(|| cluster.restart(leader)).expect("the node rejoins");

    // 2. A node hung for 4 s (it keeps its connections open), then resumed.
    until_acknowledged(&tally, total / 2).await;
    let hung = log_leader(&js, &cluster).await.unwrap_or(0);
    tokio::task::block_in_place(|| cluster.pause(hung));
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| cluster.resume(hung));

    // 3. The whole cluster restarted.
    until_acknowledged(&tally, total * 5 / 8).await;
    let restarting = Instant::now();
    tokio::task::block_in_place(|| cluster.restart_all()).expect("the cluster restarts");
    let acked = tally.acknowledged.load(Ordering::Relaxed);
    until_acknowledged(&tally, (acked + 20).min(total)).await;
    let restart_recovery = restarting.elapsed();

    for writer in writers {
        writer.await.expect("a writer finished");
    }
    assert_eq!(tally.acknowledged.load(Ordering::Relaxed), total);

    // Everything, read back through a new connection (which may have to wait for the streams'
    // leaders after the restart).
    let deadline = Instant::now() + Duration::from_secs(60);
    let reader = loop {
        match NatsEventStore::connect(&cluster.urls(), options()).await {
            Ok(reader) => break reader,
            Err(err) => {
                assert!(Instant::now() < deadline, "no reader within 60 s: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut all: Vec<RecordedEvent> = Vec::new();
    let mut from = Position::START;
    loop {
        let page = reader.read_all(from, 1_000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        from = last.position.next();
        all.extend(page);
    }
    let mut by_commit: HashMap<(u64, u64), Vec<(u64, Position)>> = HashMap::new();
    for event in &all {
        let v: serde_json::Value = event.payload.decode().unwrap();
        let key = (v["w"].as_u64().unwrap(), v["n"].as_u64().unwrap());
        by_commit
            .entry(key)
            .or_default()
            .push((v["i"].as_u64().unwrap(), event.position));
    }
    assert_eq!(
        by_commit.len() as u64,
        total,
        "every acknowledged commit is stored"
    );
    for ((w, n), events) in &by_commit {
        let steps: Vec<u64> = events.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            steps,
            (0..EVENTS_PER_COMMIT).collect::<Vec<_>>(),
            "writer {w} commit {n}: stored once and whole"
        );
        assert!(
            events.windows(2).all(|p| p[1].1.get() == p[0].1.get() + 1),
            "writer {w} commit {n}: its events are consecutive"
        );
        assert!(
            reader
                .find_command(command_id(*w, *n))
                .await
                .unwrap()
                .is_some(),
            "writer {w} commit {n}: its command is recorded"
        );
    }
    assert_eq!(all.len() as u64, total * EVENTS_PER_COMMIT);
    let positions: Vec<Position> = all.iter().map(|e| e.position).collect();

    // The live subscriber and the projection runner: every event once, in order.
    let head = *positions.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().last() != Some(&head) || projected.applied() != Some(head) {
        assert!(
            Instant::now() < deadline,
            "the subscriber ({:?}) or the projection ({:?}) did not reach {head}",
            seen.lock().unwrap().last(),
            projected.applied()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.abort();
    runner.stop().await;
    assert_eq!(*seen.lock().unwrap(), positions, "the live subscriber");
    assert_eq!(projected.read(Clone::clone), positions, "the projection");

    eprintln!(
        "{WRITERS} writers x {PER_WRITER} commits of {EVENTS_PER_COMMIT} events: attempted \
         {} commits, acknowledged {total} ({} found stored by an earlier try whose answer was \
         lost), found {} commits ({} events), each once and whole; the longest wait for one \
         commit {} ms; 20 more commits acknowledged {kill_recovery:?} after the leader was \
         killed, {restart_recovery:?} after the cluster began to restart; errors seen by \
         writers: {:?}",
        tally.attempted.load(Ordering::Relaxed),
        tally.stored_before.load(Ordering::Relaxed),
        by_commit.len(),
        all.len(),
        tally.longest_ms.load(Ordering::Relaxed),
        tally.errors.lock().unwrap(),
    );
}

/// A store set up while the cluster has lost its quorum (two of three nodes hung) keeps
/// asking within its set-up time and opens once the cluster answers; when the set-up time
/// runs out first, the error says which stream it could not set up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_up_waits_for_a_cluster_without_quorum_and_names_the_stream_it_missed() {
    let Some(cluster) = cluster(3) else {
        return;
    };
    let urls = cluster.urls();
    let quick = NatsOptions::default()
        .with_stream_prefix("SETUP")
        .with_subject_prefix("setup")
        .with_timeout(Duration::from_secs(1));
    tokio::task::block_in_place(|| {
        cluster.pause(1);
        cluster.pause(2);
    });

    let err = NatsEventStore::connect(
        &urls[..1],
        quick.clone().with_setup_timeout(Duration::from_secs(3)),
    )
    .await
    .expect_err("no quorum, no streams");
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    let why = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        why.as_deref()
            .is_some_and(|why| why.contains("JetStream stream SETUP_LOG")),
        "{why:?}"
    );

    let patient = {
        let url = urls[0].clone();
        let options = quick.with_setup_timeout(Duration::from_secs(60));
        tokio::spawn(async move { NatsEventStore::connect(&[url], options).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!patient.is_finished(), "the set-up waits for the cluster");
    tokio::task::block_in_place(|| {
        cluster.resume(1);
        cluster.resume(2);
    });
    let store = patient
        .await
        .unwrap()
        .expect("the store opens once the cluster answers");
    let stream = StreamId::new("after-the-wait").unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("waited", Json::null())],
        )
        .await
        .expect("the store works");
    assert_eq!(
        store
            .read_stream(&stream, Version::new(1))
            .await
            .unwrap()
            .len(),
        1
    );
}
