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
/// process and command dispatcher, as two processes would have.
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
    two_servers_share_one_store(&a, &b).await;
}

/// Two servers on one NATS cluster (3 nodes, three replicas), each with its own connection
/// (to a different node), read models, registration process and command dispatcher, as two
/// processes would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_nats_cluster() {
    use cqrs_store_nats::testing::shared_cluster;
    use cqrs_store_nats::{NatsEventStore, NatsOptions};
    use std::sync::Arc;

    let Some(cluster) = shared_cluster() else {
        return;
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let options = NatsOptions::default()
        .with_stream_prefix(format!("W{}", &unique[..12]))
        .with_subject_prefix(format!("w{}", &unique[..12]));
    let urls = cluster.urls();
    let a = Server::start(
        Arc::new(
            NatsEventStore::connect(&urls[0..1], options.clone())
                .await
                .unwrap(),
        ),
        None,
    )
    .await;
    let b = Server::start(
        Arc::new(NatsEventStore::connect(&urls[1..2], options).await.unwrap()),
        None,
    )
    .await;
    two_servers_share_one_store(&a, &b).await;
}

/// Registrants spread over two servers of one store never oversell, each server's pages show
/// what the other did, and a payment started on one confirms an order placed on the other.
async fn two_servers_share_one_store(a: &Server, b: &Server) {
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
            let on = if n % 2 == 0 { a } else { b };
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
        let other = if n % 2 == 0 { b } else { a };
        let (status, view) = other
            .get(&format!("/api/orders/{order}?min_version=3"))
            .await;
        assert_eq!(status, 200, "{view}");
        let got = view["lines"][0]["reserved"].as_u64().unwrap();
        reserved += got;
        // Which server's registrants got the seats is up to the race: any order holding
        // seats will do, paid on the server it was not placed on.
        if got > 0 && held.is_none() {
            held = Some((order, other));
        }
    }
    assert_eq!(reserved, 20, "every seat held once across both servers");

    // Placed on one server, paid on the other, confirmed as both see it.
    let (order, payer) = held.expect("an order holds seats");
    let (status, payment) = payer
        .post(&format!("/api/orders/{order}/payments"), json!({}))
        .await;
    assert_eq!(status, 201, "{payment}");
    let payment = payment["payment_id"].as_str().unwrap().to_owned();
    let (status, _) = payer
        .post(&format!("/api/payments/{payment}/complete"), json!({}))
        .await;
    assert_eq!(status, 204);
    for server in [a, b] {
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

/// Twelve orders for one conference name one registrant at once (the email in as many
/// cases): one is named, and the others are told the registrant has an order in progress.
/// Another registrant is not held up; once the named order is confirmed, another order can
/// name the registrant; and an order for another conference always could.
pub(crate) async fn one_registrant_names_one_open_order_per_conference(s: &Server) {
    let c = s.published_conference("solo", 5).await;
    let free = json!([{"seat_type_id": c.free, "quantity": 1}]);
    let mut orders = Vec::new();
    for _ in 0..12 {
        orders.push(s.reserved_order(&c, free.clone()).await.0);
    }
    let person = |first: &str, email: &str| json!({"first_name": first, "last_name": "Lima", "email": email});
    let namings: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(n, order)| {
            let client = s.client.clone();
            let url = s.url(&format!("/api/orders/{order}/registrant"));
            let ana = person(
                "Ana",
                &if n % 2 == 0 {
                    "ana@example.com".to_owned()
                } else {
                    "ANA@example.com".to_owned()
                },
            );
            tokio::spawn(async move {
                let response = client.post(url).json(&ana).send().await.unwrap();
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                (status, body)
            })
        })
        .collect();
    let (mut named, mut refused) = (Vec::new(), Vec::new());
    for (order, naming) in orders.iter().zip(namings) {
        let (status, body) = naming.await.unwrap();
        match status {
            204 => named.push(order.clone()),
            409 => {
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(body["error"]["code"], "registrant_has_open_order", "{body}");
                refused.push(order.clone());
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(
        named.len(),
        1,
        "one open order per registrant and conference"
    );
    let named = &named[0];

    let registrant = |order: &str, who: serde_json::Value| {
        let (order, who) = (order.to_owned(), who);
        async move {
            s.post(&format!("/api/orders/{order}/registrant"), who)
                .await
        }
    };
    let (status, body) = registrant(&refused[0], person("Bo", "bo@example.com")).await;
    assert_eq!(status, 204, "another registrant is not held up: {body}");
    let (status, _) = registrant(&refused[1], person("Ana", "ana@example.com")).await;
    assert_eq!(status, 409, "still open");

    let other = s.published_conference("solo_two", 5).await;
    let (elsewhere, _) = s
        .reserved_order(&other, json!([{"seat_type_id": other.free, "quantity": 1}]))
        .await;
    let (status, body) = registrant(&elsewhere, person("Ana", "ana@example.com")).await;
    assert_eq!(status, 204, "another conference is another rule: {body}");

    assert_eq!(
        s.post(&format!("/api/orders/{named}/confirm"), json!({}))
            .await
            .0,
        204
    );
    let (status, body) = registrant(&refused[1], person("Ana", "ana@example.com")).await;
    assert_eq!(status, 204, "the confirmed order is no longer open: {body}");
}
