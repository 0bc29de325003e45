//! The hostile-load findings, replayed against the real binary on SQLite (loopback only,
//! bounded in time and requests): a burst of orders against one conference while a
//! registrant orders from another. (SIGTERM under load, slow clients, brute force and two
//! processes on one file have their own tests in `operations` and `api`.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::operations::{start, stop};

/// Creates and publishes a conference with `quantity` seats of one type; returns the seat
/// type's id once its seats are on sale.
async fn on_sale(client: &reqwest::Client, base: &str, slug: &str, quantity: u32) -> String {
    let created: Value = client
        .post(format!("{base}/api/conferences"))
        .json(&json!({
            "name": slug, "slug": slug, "description": "Talks", "location": "Lisbon",
            "start_date": "2026-09-14", "end_date": "2026-09-15",
            "owner_name": "Ana Lima", "owner_email": "ana@example.com",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, code) = (
        created["id"].as_str().unwrap().to_owned(),
        created["access_code"].as_str().unwrap().to_owned(),
    );
    let seat_type: Value = client
        .post(format!("{base}/api/conferences/{id}/seat-types"))
        .basic_auth("ana@example.com", Some(&code))
        .json(&json!({"name": "Pass", "description": "Both days", "price": 100, "quantity": quantity}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published = client
        .post(format!("{base}/api/conferences/{id}/publish"))
        .basic_auth("ana@example.com", Some(&code))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204);
    for _ in 0..500 {
        let view: Value = client
            .get(format!("{base}/api/conferences/{slug}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["seat_types"][0]["available"].as_i64() > Some(0) {
            return seat_type["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the seats of {slug} never went on sale");
}

/// What a burst's requests got.
#[derive(Debug, Default)]
struct Burst {
    accepted: Vec<String>,
    turned_away: usize,
    other: Vec<u16>,
}

/// `tasks` clients ordering one seat at a time from `slug` as fast as they can, until
/// `until` or `most` orders each.
async fn burst(base: &str, slug: &str, seat_type: &str, tasks: usize, until: Instant) -> Burst {
    let most = 5_000;
    let runs: Vec<_> = (0..tasks)
        .map(|_| {
            let (url, order) = (
                format!("{base}/api/conferences/{slug}/orders"),
                json!({"seats": [{"seat_type_id": seat_type, "quantity": 1}]}),
            );
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut got = Burst::default();
                for _ in 0..most {
                    if Instant::now() >= until {
                        break;
                    }
                    let Ok(response) = client.post(&url).json(&order).send().await else {
                        got.other.push(0); // the server went away (SIGTERM)
                        break;
                    };
                    match response.status().as_u16() {
                        202 => {
                            let body: Value = response.json().await.unwrap();
                            got.accepted
                                .push(body["order_id"].as_str().unwrap().to_owned());
                        }
                        503 if response.headers().contains_key("retry-after") => {
                            got.turned_away += 1;
                        }
                        status => got.other.push(status),
                    }
                }
                got
            })
        })
        .collect();
    let mut all = Burst::default();
    for run in runs {
        let got = run.await.unwrap();
        all.accepted.extend(got.accepted);
        all.turned_away += got.turned_away;
        all.other.extend(got.other);
    }
    all
}

/// How long `order` takes to show its seats reserved (bounded: `None` after 60 s).
async fn reserved_after(client: &reqwest::Client, base: &str, order: &str) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let response = client
            .get(format!("{base}/api/orders/{order}"))
            .send()
            .await
            .ok()?;
        if response.status() == 200 {
            let view: Value = response.json().await.ok()?;
            if view["status"] == "reservation_completed" {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Before: six connections sent 1,840 orders/s to one conference; a registrant ordering from
/// another every 3 s waited ~119 s for seats, or never got them (21 of 23 expired). Now the
/// conference's queue is bounded (the rest of the burst is turned away with `503` and
/// `Retry-After`), so the registrant's orders are reserved within seconds and the backlog
/// drains within seconds of the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_one_conference_does_not_starve_another() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("conference.db").display());
    // One address sends the whole burst: lift the per-client allowance, so that the burst
    // meets the conference's queue bound instead.
    let (server, base) = start(
        &database,
        &["--orders-per-client", "1000000", "--order-refill", "1ms"],
    );
    let client = reqwest::Client::new();
    let crowded = on_sale(&client, &base, "crowded", 100_000).await;
    let quiet = on_sale(&client, &base, "quiet", 100).await;

    let until = Instant::now() + Duration::from_secs(6);
    let flood = tokio::spawn({
        let base = base.clone();
        async move { burst(&base, "crowded", &crowded, 6, until).await }
    });
    // The registrant: an order from the quiet conference every half second, during the burst.
    let mut registrant = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while Instant::now() + Duration::from_millis(500) < until {
        let placed: Value = client
            .post(format!("{base}/api/conferences/quiet/orders"))
            .json(&json!({"seats": [{"seat_type_id": quiet, "quantity": 1}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let order = placed["order_id"]
            .as_str()
            .expect("the registrant's order is taken")
            .to_owned();
        let (client, base) = (client.clone(), base.clone());
        registrant.push(tokio::spawn(async move {
            reserved_after(&client, &base, &order).await
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let flood = flood.await.unwrap();
    let mut waits = Vec::new();
    for wait in registrant {
        waits.push(
            wait.await
                .unwrap()
                .expect("every registrant order is reserved"),
        );
    }
    let burst_done = Instant::now();
    // The whole backlog of accepted orders drains within seconds of the burst.
    let last = flood
        .accepted
        .last()
        .expect("the burst placed orders")
        .clone();
    let drained = reserved_after(&client, &base, &last).await;
    let drained = drained.map(|_| burst_done.elapsed());
    let slowest = waits.iter().max().copied().unwrap_or_default();
    eprintln!(
        "burst: {} accepted, {} turned away, other {:?}; registrant: {} orders, slowest reserved after {slowest:?}; backlog drained {drained:?} after the burst",
        flood.accepted.len(),
        flood.turned_away,
        flood.other,
        waits.len(),
    );
    assert!(
        flood.other.is_empty(),
        "only 202 or 503 + Retry-After: {:?}",
        flood.other
    );
    assert!(waits.len() >= 8, "{waits:?}");
    assert!(
        slowest < Duration::from_secs(5),
        "the registrant waited {slowest:?}: {waits:?}"
    );
    assert!(
        drained.is_some_and(|d| d < Duration::from_secs(10)),
        "the backlog drained {drained:?} after the burst"
    );

    stop(server);
}
