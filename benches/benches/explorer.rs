//! The operator's explorer over a log of 1,000,000 events (`CQRS_BENCH_EVENTS` sets it) on
//! SQLite (`synchronous=FULL`): how long each page takes to answer a signed-in operator over
//! loopback HTTP. 90% of the events are in order streams of ten (one flow each), 10% in ten
//! long `seats` streams, so the pages meet both a category of 90,000 streams and streams of
//! 10,000 events. No raw baseline: these are page times, and the target is that none grows
//! with the log (each reads a page, never the log).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use benches::{big_log_size, deposit_payload, event_metadata};
use conference_example::app::{AppConfig, ConferenceApp};
use conference_example::web::{WebState, serve};
use cqrs_core::{
    Commit, EventStore, ExpectedVersion, Json, NewEvent, Storage, StreamId, SystemClock,
};
use cqrs_store_sqlite::{SqliteEventStore, SqliteOptions};
use criterion::{Criterion, criterion_group, criterion_main};

const TOKEN: &str = "bench-operator";
const ORDER_EVENTS: u64 = 10;
const SEATS_STREAMS: u64 = 10;

/// Fills `store`: the order streams (each one flow: one correlation id), then the seats
/// streams, committed a thousand commits to a transaction. Returns an order and its flow.
async fn fill(store: &SqliteEventStore, size: u64) -> (String, uuid::Uuid) {
    let payload = deposit_payload();
    let event = |flow: uuid::Uuid| {
        let mut metadata = event_metadata();
        metadata.correlation_id = Some(flow);
        NewEvent::new("order.changed", Json::from_stored(payload.as_str())).with_metadata(metadata)
    };
    let orders = size * 9 / 10 / ORDER_EVENTS;
    let mut middle = None;
    let mut commits = Vec::new();
    for i in 0..orders {
        let flow = uuid::Uuid::now_v7();
        let stream = format!("order-{:08}", i * 7_919 % orders);
        if i == orders / 2 {
            middle = Some((stream.clone(), flow));
        }
        commits.push(Commit::new(
            StreamId::new(stream).expect("stream"),
            ExpectedVersion::NoStream,
            (0..ORDER_EVENTS).map(|_| event(flow)).collect(),
        ));
        if commits.len() == 1_000 {
            store
                .commit_in_order(std::mem::take(&mut commits))
                .await
                .expect("fill");
        }
    }
    let rest = size - orders * ORDER_EVENTS;
    for s in 0..SEATS_STREAMS {
        let mut left = rest / SEATS_STREAMS;
        while left > 0 {
            let n = left.min(1_000);
            commits.push(Commit::new(
                StreamId::new(format!("seats-{s}")).expect("stream"),
                ExpectedVersion::Any,
                (0..n).map(|_| event(uuid::Uuid::now_v7())).collect(),
            ));
            left -= n;
        }
    }
    store.commit_in_order(commits).await.expect("fill");
    middle.expect("at least one order")
}

/// An explorer over a freshly filled log of `size` events, on loopback: its base URL, a
/// signed-in operator's cookie, an order and its flow, and the directory to keep.
struct Explorer {
    base: String,
    cookie: String,
    order: String,
    flow: uuid::Uuid,
    _dir: tempfile::TempDir,
}

fn start(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    size: u64,
    indexed: bool,
) -> Explorer {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = SqliteOptions::default().with_correlation_index(indexed);
    let store = rt
        .block_on(SqliteEventStore::open_with(
            dir.path().join("explorer.db"),
            options,
        ))
        .expect("store");
    let (order, flow) = rt.block_on(fill(&store, size));
    let storage: Arc<dyn Storage> = Arc::new(store);
    // The app's read models are not run: the explorer reads the store.
    let app = ConferenceApp::new(storage, Arc::new(SystemClock), AppConfig::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))
        .expect("listen");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    rt.spawn(serve(
        listener,
        WebState::new(app, Some(TOKEN.into())),
        std::future::pending(),
    ));
    let cookie = rt.block_on(async {
        let response = client
            .post(format!("{base}/explorer/login"))
            .form(&[("token", TOKEN)])
            .send()
            .await
            .expect("sign in");
        let set = response.headers()["set-cookie"].to_str().expect("cookie");
        set.split(';').next().expect("cookie").to_owned()
    });
    Explorer {
        base,
        cookie,
        order,
        flow,
        _dir: dir,
    }
}

fn explorer(c: &mut Criterion) {
    let rt = benches::runtime();
    let size = big_log_size();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // One page, answered 200 in full: its size.
    let fetch = |url: String, cookie: String| {
        let client = &client;
        async move {
            let response = client
                .get(&url)
                .header("cookie", cookie)
                .send()
                .await
                .expect("page");
            assert_eq!(response.status(), 200, "{url}");
            response.bytes().await.expect("body").len()
        }
    };
    let plain = start(&rt, &client, size, false);
    let (order, flow) = (&plain.order, plain.flow);
    let middle_of_orders = format!("order-{:08}", size * 9 / 10 / ORDER_EVENTS / 2);
    let pages = [
        ("overview", "/explorer".to_owned()),
        (
            "streams_of_a_category",
            "/explorer/streams?category=order".to_owned(),
        ),
        (
            "streams_deep_in_a_category",
            format!("/explorer/streams?category=order&after={middle_of_orders}"),
        ),
        ("stream_of_10_events", format!("/explorer/streams/{order}")),
        (
            "events_deep_in_a_long_stream",
            format!(
                "/explorer/streams/seats-3?from={}",
                size / 10 / SEATS_STREAMS / 2
            ),
        ),
        ("flow_timeline", format!("/explorer/timeline/{flow}")),
        (
            "stream_timeline",
            format!("/explorer/streams/{order}/timeline"),
        ),
        ("read_models", "/explorer/read-models".to_owned()),
        ("processes", "/explorer/processes".to_owned()),
        ("scheduled", "/explorer/scheduled".to_owned()),
        ("dead_letters", "/explorer/dead-letters".to_owned()),
    ];
    let mut group = c.benchmark_group("sqlite_full/explorer");
    group.sample_size(10);
    for (name, path) in pages {
        let url = format!("{}{path}", plain.base);
        rt.block_on(fetch(url.clone(), plain.cookie.clone()));
        benches::settle_disk();
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| fetch(url.clone(), plain.cookie.clone()));
        });
    }
    group.finish();
    drop(plain);

    // The timelines again, over the same log in a store that indexes the message log by
    // correlation id (`SqliteOptions::with_correlation_index`).
    let indexed = start(&rt, &client, size, true);
    let mut group = c.benchmark_group("sqlite_full/explorer_correlation_index");
    group.sample_size(10);
    for (name, path) in [
        (
            "flow_timeline",
            format!("/explorer/timeline/{}", indexed.flow),
        ),
        (
            "stream_timeline",
            format!("/explorer/streams/{}/timeline", indexed.order),
        ),
    ] {
        let url = format!("{}{path}", indexed.base);
        rt.block_on(fetch(url.clone(), indexed.cookie.clone()));
        benches::settle_disk();
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| fetch(url.clone(), indexed.cookie.clone()));
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = explorer
}
criterion_main!(benches);
