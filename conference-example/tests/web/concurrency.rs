use serde_json::json;

use crate::Server;

/// 200 registrants order at once against a quota of 20: every seat is sold at most once.
pub(crate) async fn two_hundred_registrants_never_exceed_the_quota(s: &Server) {
    let c = s.published_conference("rush", 20).await;
    let orders: Vec<_> = (0..200)
        .map(|n| {
            let (client, url, paid) = (
                s.client.clone(),
                s.url("/api/conferences/rush/orders"),
                c.paid.clone(),
            );
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&json!({"seats": [{"seat_type_id": paid, "quantity": 1 + n % 3}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                let body: serde_json::Value = response.json().await.unwrap();
                body["order_id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut reserved = 0;
    for order in orders {
        let order = order.await.unwrap();
        let (status, view) = s.get(&format!("/api/orders/{order}?min_version=3")).await;
        assert_eq!(status, 200);
        assert!(
            ["reservation_completed", "partially_reserved"]
                .contains(&view["status"].as_str().unwrap()),
            "{view}"
        );
        reserved += view["lines"][0]["reserved"].as_u64().unwrap();
    }
    assert_eq!(reserved, 20, "every seat held once, and none more");
    let (_, conference) = s.get("/api/conferences/rush").await;
    let paid = conference["seat_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == c.paid.as_str())
        .unwrap()
        .clone();
    assert_eq!(paid["available"], 0);
}

/// Two servers on one PostgreSQL database, each with its own pool, read models, registration
/// process and command dispatcher, as two processes would have: registrants spread over both
/// never oversell, each process's pages show what the other did, and a payment started on
/// one confirms an order placed on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_postgres_database() {
    use cqrs_store_postgres::PostgresEventStore;
    use cqrs_store_postgres::testing::{Durability, server};
    use std::sync::Arc;

    let Some(pg) = server(Durability::Fast) else {
        return;
    };
    let url = pg.fresh_database().await;
    let a = Server::start(
        Arc::new(PostgresEventStore::connect(&url).await.unwrap()),
        None,
    )
    .await;
    let b = Server::start(
        Arc::new(PostgresEventStore::connect(&url).await.unwrap()),
        None,
    )
    .await;
    let c = a.published_conference("shared", 20).await;
    for _ in 0..1_000 {
        let (status, view) = b.get("/api/conferences/shared").await;
        if status == 200 && view["seat_types"][0]["available"] == 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let orders: Vec<_> = (0..60)
        .map(|n| {
            let on = if n % 2 == 0 { &a } else { &b };
            let (client, url, paid) = (
                on.client.clone(),
                on.url("/api/conferences/shared/orders"),
                c.paid.clone(),
            );
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&json!({"seats": [{"seat_type_id": paid, "quantity": 1 + n % 2}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                let body: serde_json::Value = response.json().await.unwrap();
                body["order_id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut reserved = 0;
    let mut held = None;
    for (n, order) in orders.into_iter().enumerate() {
        let order = order.await.unwrap();
        // Read on the other server.
        let other = if n % 2 == 0 { &b } else { &a };
        let (status, view) = other
            .get(&format!("/api/orders/{order}?min_version=3"))
            .await;
        assert_eq!(status, 200, "{view}");
        let got = view["lines"][0]["reserved"].as_u64().unwrap();
        reserved += got;
        if got > 0 && n % 2 == 0 {
            held = Some(order);
        }
    }
    assert_eq!(reserved, 20, "every seat held once across both servers");

    // Placed on a, paid on b, confirmed as both see it.
    let order = held.expect("an order placed on a holds seats");
    let (status, payment) = b
        .post(&format!("/api/orders/{order}/payments"), json!({}))
        .await;
    assert_eq!(status, 201, "{payment}");
    let payment = payment["payment_id"].as_str().unwrap().to_owned();
    let (status, _) = b
        .post(&format!("/api/payments/{payment}/complete"), json!({}))
        .await;
    assert_eq!(status, 204);
    for server in [&a, &b] {
        let mut confirmed = false;
        for _ in 0..1_000 {
            let (_, view) = server.get(&format!("/api/orders/{order}")).await;
            if view["status"] == "confirmed" {
                confirmed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(confirmed, "both servers show the order confirmed");
    }
}

/// Twelve owners create a conference under one slug at once: one gets it, and the others are
/// told the slug is taken.
pub(crate) async fn owners_racing_for_one_slug_get_one_conference(s: &Server) {
    let creations: Vec<_> = (0..12)
        .map(|n| {
            let (client, url) = (s.client.clone(), s.url("/api/conferences"));
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&json!({
                        "name": format!("Race {n}"), "slug": "race", "description": "Talks",
                        "location": "Lisbon", "start_date": "2026-09-14T09:00:00Z",
                        "end_date": "2026-09-15T18:00:00Z", "owner_name": "Ana Lima",
                        "owner_email": format!("owner{n}@example.com"),
                    }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                (status, body)
            })
        })
        .collect();
    let mut created = 0;
    for creation in creations {
        let (status, body) = creation.await.unwrap();
        match status {
            201 => created += 1,
            409 => assert_eq!(body["error"]["code"], "slug_taken", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(created, 1, "one conference per slug");
}
