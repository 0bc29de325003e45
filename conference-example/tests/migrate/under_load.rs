//! The whole V1 → V2 upgrade while registrants keep ordering and paying against the running
//! server: the re-created conference events appended in place, the read models switched
//! blue/green, the store migrated beside the running server, then a cut-over to a server on
//! the migrated store. Records the longest interval without a successful order, the failed
//! requests and the events lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conference_example::app::{AppConfig, ConferenceApp, Engine, ReadModels, open_storage};
use conference_example::migrate::{V1Options, backfill_in_place, make_v1, upgrade};
use conference_example::read::DraftOrderState;
use conference_example::web::{WebState, serve};
use cqrs_core::migrate::SOURCE_POSITION;
use cqrs_core::{Position, Storage, SystemClock};
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock, oneshot};

const OPERATOR: &str = "operator-secret";

/// A server and its engine, stopped in that order.
struct Served {
    base: String,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(app: ConferenceApp, engine: Engine, listener: tokio::net::TcpListener) -> Self {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            // The load comes from one client (127.0.0.1): no per-client limit on its orders.
            let state = WebState::new(app, Some(OPERATOR.into()))
                .with_orders_per_client(1_000_000, std::time::Duration::from_millis(1));
            serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
            engine.stop().await;
        });
        Self { base, stop, done }
    }

    /// Stops taking requests, lets the ones in flight finish, then stops the engine.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.done.await.unwrap();
    }
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

/// Every request goes to the server this names; the cut-over holds it while it switches.
struct Router {
    base: RwLock<String>,
    client: reqwest::Client,
}

impl Router {
    async fn call(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{base}{path}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some((email, code)) = auth.and_then(|a| a.split_once(':')) {
            request = request.basic_auth(email, Some(code));
        } else if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(err) => (0, Value::String(err.to_string())),
        }
    }
}

#[derive(Default)]
struct Tally {
    placed: Mutex<Vec<Instant>>,
    accepted: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
    paid: AtomicU64,
}

/// One registrant after another: place an order, wait for its seats, pay. A flow holds the
/// router for its whole length, so the cut-over waits for flows under way and no flow spans
/// two servers.
async fn registrant(
    router: Arc<Router>,
    slug: String,
    seat_type: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let base = router.base.read().await;
        let fail = |what: String| {
            let tally = Arc::clone(&tally);
            async move { tally.failures.lock().await.push(what) }
        };
        let (status, body) = router
            .call(
                &base,
                reqwest::Method::POST,
                &format!("/api/conferences/{slug}/orders"),
                Some(json!({"seats": [{"seat_type_id": seat_type, "quantity": 1}]})),
                None,
            )
            .await;
        if status != 202 {
            fail(format!("order: {status} {body}")).await;
            continue;
        }
        tally.placed.lock().await.push(Instant::now());
        let order = body["order_id"].as_str().unwrap_or_default().to_owned();
        tally.accepted.lock().await.push(order.clone());
        let (status, body) = router
            .call(
                &base,
                reqwest::Method::GET,
                &format!("/api/orders/{order}?min_version=3"),
                None,
                None,
            )
            .await;
        if status != 200 || body["status"] != "reservation_completed" {
            fail(format!("reservation: {status} {body}")).await;
            continue;
        }
        let (status, body) = router
            .call(
                &base,
                reqwest::Method::POST,
                &format!("/api/orders/{order}/payments"),
                None,
                None,
            )
            .await;
        if status != 201 {
            fail(format!("payment: {status} {body}")).await;
            continue;
        }
        let payment = body["payment_id"].as_str().unwrap_or_default().to_owned();
        let (status, body) = router
            .call(
                &base,
                reqwest::Method::POST,
                &format!("/api/payments/{payment}/complete"),
                None,
                None,
            )
            .await;
        if status != 204 {
            fail(format!("complete: {status} {body}")).await;
            continue;
        }
        tally.paid.fetch_add(1, Ordering::Relaxed);
    }
}

fn longest_gap(mut times: Vec<Instant>) -> Duration {
    times.sort();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1_store_is_upgraded_while_registrants_keep_ordering_and_paying() {
    let dir = tempfile::tempdir().unwrap();
    let old_url = format!("sqlite://{}", dir.path().join("v1.db").display());
    let new_url = format!("sqlite://{}", dir.path().join("v2.db").display());
    let old: Arc<dyn Storage> = open_storage(&old_url).await.unwrap();
    let made = make_v1(
        Arc::clone(&old),
        V1Options {
            events: 20_000,
            ..V1Options::default()
        },
        &mut |_| {},
    )
    .await
    .unwrap();
    let v1_events = old
        .read_all(Position::START, 1_000_000)
        .await
        .unwrap()
        .len();

    // 1. In place: the integration events V1 never stored. Today's code can then run on the
    //    V1 store, reading V1's events through the upcasters, with V1's read models.
    let appended = backfill_in_place(&old, &made.management).await.unwrap();
    assert!(appended > 0);
    let a_app = ConferenceApp::new(
        Arc::clone(&old),
        Arc::new(SystemClock),
        AppConfig {
            read_models: ReadModels::V1,
            ..AppConfig::default()
        },
    );
    a_app.settle().await.unwrap();
    let a = Served::start(a_app.clone(), a_app.start(), listener().await).await;
    let router = Arc::new(Router {
        base: RwLock::new(a.base.clone()),
        client: reqwest::Client::new(),
    });

    // A conference with seats enough for the load, created on the running server.
    let base = a.base.clone();
    let (status, created) = router
        .call(&base, reqwest::Method::POST, "/api/conferences", Some(json!({
            "name": "Upgrade day", "slug": "upgrade_day", "description": "Talks", "location": "Lisbon",
            "start_date": "2027-09-14T09:00:00Z", "end_date": "2027-09-15T18:00:00Z",
            "owner_name": "Ana Lima", "owner_email": "ana@example.com",
        })), None)
        .await;
    assert_eq!(status, 201, "{created}");
    let owner = format!(
        "ana@example.com:{}",
        created["access_code"].as_str().unwrap()
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, seat) = router
        .call(&base, reqwest::Method::POST, &format!("/api/conferences/{id}/seat-types"), Some(json!({"name": "Day pass", "description": "Both days", "price": "120", "quantity": 100_000})), Some(&owner))
        .await;
    assert_eq!(status, 201, "{seat}");
    let seat_type = seat["id"].as_str().unwrap().to_owned();
    let (status, _) = router
        .call(
            &base,
            reqwest::Method::POST,
            &format!("/api/conferences/{id}/publish"),
            None,
            Some(&owner),
        )
        .await;
    assert_eq!(status, 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while router
        .call(
            &base,
            reqwest::Method::GET,
            "/api/conferences/upgrade_day",
            None,
            None,
        )
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The seats go on sale through the seat-quota process.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The load, from now to the end.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(registrant(
                Arc::clone(&router),
                "upgrade_day".into(),
                seat_type.clone(),
                Arc::clone(&tally),
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. The read models, blue/green, on the running server.
    let (status, body) = router
        .call(
            &base,
            reqwest::Method::POST,
            "/api/admin/projections/upgrade",
            None,
            Some(OPERATOR),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = router
            .call(
                &base,
                reqwest::Method::GET,
                "/api/admin/projections",
                None,
                Some(OPERATOR),
            )
            .await;
        let keys: Vec<&str> = body["projections"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["live"]["key"].as_str()).collect())
            .unwrap_or_default();
        if keys == ["conference_directory@v2", "order_views@v2"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the read models did not switch: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 3. The store, migrated beside the running server, caught up run by run.
    let new: Arc<dyn Storage> = open_storage(&new_url).await.unwrap();
    let migration = upgrade(&old, &made.management).await.unwrap();
    migration
        .run(old.as_ref(), new.as_ref(), &mut |_| {})
        .await
        .unwrap();
    for _ in 0..5 {
        migration
            .resume(old.as_ref(), new.as_ref(), &mut |_| {})
            .await
            .unwrap();
    }
    // The next server's read models follow the migrated store before it takes over.
    let b_app = ConferenceApp::new(
        Arc::clone(&new),
        Arc::new(SystemClock),
        AppConfig::default(),
    );
    b_app.start_read_models();
    let b_listener = listener().await;

    // 4. The cut-over: new flows wait, flows under way finish on the old server, which then
    //    stops; the last events and the work under way are copied; the new server takes over.
    let cut = Instant::now();
    let mut gate = router.base.write().await;
    let drained = cut.elapsed();
    a.stop().await;
    let last = migration
        .resume(old.as_ref(), new.as_ref(), &mut |_| {})
        .await
        .unwrap();
    b_app.settle().await.unwrap();
    let b = Served::start(b_app.clone(), b_app.start(), b_listener).await;
    *gate = b.base.clone();
    drop(gate);
    let cutover = cut.elapsed();

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    // Nothing failed, nothing waited long, nothing was lost.
    let failures = tally.failures.lock().await.clone();
    let gap = longest_gap(tally.placed.lock().await.clone());
    let accepted = tally.accepted.lock().await.clone();
    b_app.settle().await.unwrap();
    let mut lost = 0;
    for order in &accepted {
        match b_app.draft_order(order.parse().unwrap()) {
            Ok(draft)
                if matches!(
                    draft.state,
                    DraftOrderState::Confirmed | DraftOrderState::ReservationCompleted
                ) => {}
            _ => lost += 1,
        }
    }
    let old_events = old
        .read_all(Position::START, 10_000_000)
        .await
        .unwrap()
        .len();
    let copied = new
        .read_all(Position::START, 10_000_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.metadata.headers.contains_key(SOURCE_POSITION))
        .count();
    eprintln!(
        "upgrade under load: {v1_events} V1 events (+{appended} re-created in place); {} orders placed, {} paid, {} failed requests; \
         cut-over {cutover:?} (drain {drained:?}, last copy of {} events and {} processes); longest interval without a successful order {gap:?}; \
         {copied} of {old_events} events copied; {lost} accepted orders lost",
        accepted.len(),
        tally.paid.load(Ordering::Relaxed),
        failures.len(),
        last.events_written,
        last.processes,
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        copied, old_events,
        "every event of the old store is in the new one"
    );
    assert_eq!(lost, 0);
    assert!(
        gap < Duration::from_secs(1),
        "{gap:?} without a successful order"
    );
    b.stop().await;
}
