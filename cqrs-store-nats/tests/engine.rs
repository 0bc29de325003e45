//! The behaviour of NATS JetStream the store's design relies on (ADR 0012), pinned on a real
//! 3-node cluster with three replicas: if a server release changes it, these fail first.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, header};
use bytes::Bytes;
use cqrs_store_nats::testing::{Cluster, cluster};
use futures::StreamExt;

/// A client of every node of `cluster`, and its JetStream context.
async fn connect(cluster: &Cluster) -> (async_nats::Client, jetstream::Context) {
    // A node that hangs (SIGSTOP) keeps its connections open: the client finds out by its
    // pings going unanswered, so they go every second, not every minute.
    let client = async_nats::ConnectOptions::new()
        .ping_interval(Duration::from_secs(1))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(cluster.urls())
        .await
        .expect("connect to the cluster");
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client.clone());
    (client, js)
}

/// A file stream of `replicas` replicas over `{name}.>`, taking atomic batches.
async fn log_stream(js: &jetstream::Context, name: &str, replicas: usize) -> stream::Stream {
    js.create_stream(stream::Config {
        name: name.to_uppercase(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_atomic_publish: true,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    })
    .await
    .expect("create the stream")
}

/// Every message of `stream` matching `filter`, in sequence order: (sequence, subject, headers,
/// payload).
async fn read_all(
    stream: &stream::Stream,
    filter: &str,
) -> Vec<(u64, String, Option<HeaderMap>, Bytes)> {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.expect("messages");
    let mut all = Vec::new();
    // An ordered consumer never ends by itself: it stops at what was there when it started.
    while (all.len() as u64) < pending {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the next message within 10 s")
            .expect("a message")
            .expect("no error");
        let sequence = message.info().expect("info").stream_sequence;
        all.push((
            sequence,
            message.subject.to_string(),
            message.headers.clone(),
            message.payload.clone(),
        ));
    }
    all
}

/// Waits (up to 30 s) until every replica of `stream` is current with its leader.
async fn until_replicas_current(stream: &mut stream::Stream) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(info) = stream.info().await
            && let Some(cluster) = &info.cluster
            && cluster.leader.is_some()
            && cluster
                .replicas
                .iter()
                .all(|r| r.current && !r.offline && r.lag.unwrap_or(0) == 0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not catch up within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expecting(sequence: u64) -> Publish {
    Publish::build().expected_last_subject_sequence(sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_is_refused_by_its_subjects_last_sequence() {
    let Some(cluster) = cluster(3) else { return };
    let (_, js) = connect(&cluster).await;
    let stream = log_stream(&js, "stale", 3).await;

    let first = js
        .send_publish("stale.e.order-1", expecting(0).payload("placed".into()))
        .await
        .unwrap()
        .await
        .expect("a new subject: expected 0");
    // A second writer that read the subject before the first wrote.
    let err = js
        .send_publish(
            "stale.e.order-1",
            expecting(0).payload("placed again".into()),
        )
        .await
        .unwrap()
        .await
        .expect_err("the subject moved on");
    assert_eq!(err.kind(), PublishErrorKind::WrongLastSequence, "{err}");
    // Another subject has its own last sequence, whatever the stream's.
    js.send_publish("stale.e.order-2", expecting(0).payload("placed".into()))
        .await
        .unwrap()
        .await
        .expect("another subject is new");
    let second = js
        .send_publish(
            "stale.e.order-1",
            expecting(first.sequence).payload("paid".into()),
        )
        .await
        .unwrap()
        .await
        .expect("expecting the subject's last sequence");
    assert_eq!(second.sequence, first.sequence + 2);
    let stored = read_all(&stream, "stale.e.order-1").await;
    assert_eq!(
        stored
            .iter()
            .map(|(_, _, _, payload)| payload.as_ref())
            .collect::<Vec<_>>(),
        [&b"placed"[..], &b"paid"[..]],
        "the refused write left nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_seen_before_is_acknowledged_as_a_duplicate() {
    let Some(cluster) = cluster(3) else { return };
    let (_, js) = connect(&cluster).await;
    let stream = log_stream(&js, "dedupe", 3).await;
    let publish = || Publish::build().message_id("command-1").payload("x".into());
    let first = js
        .send_publish("dedupe.c.1", publish())
        .await
        .unwrap()
        .await
        .unwrap();
    let again = js
        .send_publish("dedupe.c.1", publish())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate, "the second is reported as a duplicate");
    assert_eq!(again.sequence, first.sequence, "and names the first");
    assert_eq!(read_all(&stream, "dedupe.>").await.len(), 1);
}

/// Publishes `messages` (subject, expected last subject sequence) as one atomic batch: the
/// server's answer to the commit.
async fn batch(
    client: &async_nats::Client,
    js: &jetstream::Context,
    messages: &[(&str, Option<u64>)],
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    for (i, (subject, expected)) in messages.iter().enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_BATCH_ID, id.as_str());
        headers.insert(header::NATS_BATCH_SEQUENCE, (i + 1).to_string());
        if let Some(expected) = expected {
            headers.insert(
                header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string(),
            );
        }
        let payload = Bytes::from(format!("{i}"));
        if i + 1 == messages.len() {
            headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
            return js
                .publish_with_headers(subject.to_string(), headers, payload)
                .await?
                .await;
        }
        // The server answers a batch's other messages with an empty reply (or an error).
        let reply = client
            .request_with_headers(subject.to_string(), headers, payload)
            .await
            .expect("the batch's message is taken");
        assert!(
            reply.payload.is_empty(),
            "an error for message {}: {:?}",
            i + 1,
            reply.payload
        );
    }
    unreachable!("a batch has messages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_over_two_subjects_is_stored_whole_or_not_at_all() {
    let Some(cluster) = cluster(3) else { return };
    let (client, js) = connect(&cluster).await;
    let mut stream = log_stream(&js, "atomic", 3).await;

    // Two events of a new stream and the command's record, which must be new too.
    let ack = batch(
        &client,
        &js,
        &[
            ("atomic.e.order-1", Some(0)),
            ("atomic.e.order-1", None),
            ("atomic.c.command-1", Some(0)),
        ],
    )
    .await
    .expect("the batch is stored");
    assert_eq!(ack.batch_size, Some(3), "{ack:?}");
    assert_eq!(ack.sequence, 3, "the batch took sequences 1 to 3");

    // The same command again, with the events' expectation right: the record's is stale, and
    // it refuses the whole batch.
    let err = batch(
        &client,
        &js,
        &[
            ("atomic.e.order-1", Some(2)),
            ("atomic.c.command-1", Some(0)),
        ],
    )
    .await
    .expect_err("the command was recorded before");
    assert_eq!(err.kind(), PublishErrorKind::WrongLastSequence, "{err}");
    // A stale expectation on the first message refuses it all the same.
    let err = batch(
        &client,
        &js,
        &[
            ("atomic.e.order-1", Some(1)),
            ("atomic.c.command-2", Some(0)),
        ],
    )
    .await
    .expect_err("the stream was not at 1");
    assert_eq!(err.kind(), PublishErrorKind::WrongLastSequence, "{err}");
    assert_eq!(
        stream.info().await.unwrap().state.last_sequence,
        3,
        "nothing of the refused batches was stored"
    );
    assert!(read_all(&stream, "atomic.c.command-2").await.is_empty());

    let ack = batch(
        &client,
        &js,
        &[
            ("atomic.e.order-1", Some(2)),
            ("atomic.c.command-2", Some(0)),
        ],
    )
    .await
    .expect("the right expectations");
    assert_eq!((ack.sequence, ack.batch_size), (5, Some(2)));
    let subjects: Vec<String> = read_all(&stream, "atomic.>")
        .await
        .into_iter()
        .map(|(_, subject, _, _)| subject)
        .collect();
    assert_eq!(
        subjects,
        [
            "atomic.e.order-1",
            "atomic.e.order-1",
            "atomic.c.command-1",
            "atomic.e.order-1",
            "atomic.c.command-2"
        ]
    );
}

/// How many messages each writer publishes, and how many write at once.
const WRITERS: u64 = 8;
const PER_WRITER: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_no_acknowledged_message() {
    let Some(mut cluster) = cluster(3) else {
        return;
    };
    let (_, js) = connect(&cluster).await;
    let mut stream = log_stream(&js, "crash", 3).await;
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .and_then(|name| cluster.node_named(&name))
        .expect("the stream has a leader among the nodes");

    let acknowledged = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (js, acknowledged, attempts) =
                (js.clone(), Arc::clone(&acknowledged), Arc::clone(&attempts));
            tokio::spawn(async move {
                let mut longest = Duration::ZERO;
                let mut acked = Vec::new();
                for n in 0..PER_WRITER {
                    // One id per message: a publish retried after an error or a timeout is
                    // stored once (the server de-duplicates by id within its window).
                    let id = format!("w{w}-{n}");
                    let started = Instant::now();
                    let deadline = started + Duration::from_secs(60);
                    loop {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let sent = js
                            .send_publish(
                                format!("crash.e.writer-{w}"),
                                Publish::build()
                                    .message_id(&id)
                                    .payload(Bytes::from(id.clone())),
                            )
                            .await;
                        let result = match sent {
                            Ok(ack) => ack.await,
                            Err(err) => Err(err),
                        };
                        match result {
                            Ok(ack) => {
                                acked.push((id, ack.sequence));
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(err) => {
                                assert!(
                                    Instant::now() < deadline,
                                    "{id} not acknowledged within 60 s: {err}"
                                );
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    longest = longest.max(started.elapsed());
                }
                (acked, longest)
            })
        })
        .collect();

    // Kill the leader a third of the way through, then bring it back once the rest finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::Relaxed) < WRITERS * PER_WRITER / 3 {
        assert!(
            Instant::now() < deadline,
            "the writers did not get a third through within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = acknowledged.load(Ordering::Relaxed);
    tokio::task::block_in_place(|| cluster.kill(leader));
    let mut acked = HashMap::new();
    let mut longest = Duration::ZERO;
    for writer in writers {
        let (ids, stall) = writer.await.expect("the writer finished");
        longest = longest.max(stall);
        for (id, sequence) in ids {
            assert!(acked.insert(id, sequence).is_none(), "one ack per id");
        }
    }
    tokio::task::block_in_place(|| cluster.restart(leader)).expect("the node rejoins");
    // A consumer may be placed on any replica, the one catching up included, and then reads
    // what that replica has so far (seen here: a third of the log): wait until every replica
    // is current before reading.
    until_replicas_current(&mut stream).await;

    let stored = read_all(&stream, "crash.>").await;
    let mut found: HashMap<String, u64> = HashMap::new();
    for (sequence, _, _, payload) in &stored {
        let id = String::from_utf8(payload.to_vec()).expect("an id");
        assert!(
            found.insert(id.clone(), *sequence).is_none(),
            "{id} is stored twice"
        );
    }
    let info = stream.info().await.unwrap().clone();
    let missing: Vec<(&String, &u64)> = acked
        .iter()
        .filter(|(id, sequence)| found.get(*id) != Some(*sequence))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages are not where their acks said (of {} read, {} in the stream, \
         last sequence {}): {:?}",
        missing.len(),
        stored.len(),
        info.state.messages,
        info.state.last_sequence,
        missing
            .iter()
            .take(10)
            .map(|(id, seq)| format!("{id}@{seq} found at {:?}", found.get(*id)))
            .collect::<Vec<_>>()
    );
    assert_eq!(acked.len() as u64, WRITERS * PER_WRITER);
    assert_eq!(
        found.len(),
        acked.len(),
        "nothing unacknowledged was stored"
    );
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, WRITERS * PER_WRITER);
    eprintln!(
        "leader {leader} killed after {killed_at} acks: attempted {} publishes, acknowledged {}, \
         found {} (the longest wait for one ack: {longest:?}); the stream's new leader: {:?}",
        attempts.load(Ordering::Relaxed),
        acked.len(),
        found.len(),
        info.cluster.as_ref().and_then(|c| c.leader.as_deref()),
    );
}

#[test]
fn a_cluster_is_gone_when_dropped() {
    let Some(cluster) = cluster(1) else { return };
    assert!(
        cluster.version().starts_with("v2."),
        "{}",
        cluster.version()
    );
    let url = cluster.urls()[0].clone();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(cluster);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the node stopped with its cluster"
    );
}

/// Publishes `count` messages to `subject`, each retried (with its id) until acknowledged,
/// within 60 s.
async fn publish_all(js: &jetstream::Context, subject: &str, ids: std::ops::Range<u64>) {
    for n in ids {
        let id = format!("{subject}-{n}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sent = js
                .send_publish(
                    subject.to_owned(),
                    Publish::build()
                        .message_id(&id)
                        .payload(Bytes::from(id.clone())),
                )
                .await;
            match sent {
                Ok(ack) => match ack.await {
                    Ok(_) => break,
                    Err(err) => assert!(Instant::now() < deadline, "{id}: {err}"),
                },
                Err(err) => assert!(Instant::now() < deadline, "{id}: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_and_a_restarted_cluster_keep_every_acknowledged_message() {
    let Some(mut cluster) = cluster(3) else {
        return;
    };
    let (_, js) = connect(&cluster).await;
    let mut stream = log_stream(&js, "pause", 3).await;
    publish_all(&js, "pause.e.a", 0..100).await;
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .and_then(|name| cluster.node_named(&name))
        .expect("a leader");
    // The leader hangs (SIGSTOP): the others elect another and go on.
    cluster.pause(leader);
    publish_all(&js, "pause.e.a", 100..200).await;
    cluster.resume(leader);
    publish_all(&js, "pause.e.a", 200..300).await;
    // Every node dies at once and comes back on its store.
    tokio::task::block_in_place(|| cluster.restart_all()).expect("the cluster comes back");
    let (_, js) = connect(&cluster).await;
    // The meta group is back; the stream's own group elects its leader after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match js.get_stream("PAUSE").await {
            Ok(stream) => break stream,
            Err(err) => assert!(Instant::now() < deadline, "the stream is gone: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    until_replicas_current(&mut stream).await;
    let stored = read_all(&stream, "pause.>").await;
    let ids: Vec<String> = stored
        .iter()
        .map(|(_, _, _, payload)| String::from_utf8(payload.to_vec()).unwrap())
        .collect();
    let want: Vec<String> = (0..300).map(|n| format!("pause.e.a-{n}")).collect();
    assert_eq!(ids, want, "every acknowledged message, once, in order");
}
