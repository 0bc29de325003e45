//! The read models upgraded from V1's to today's while registrants keep ordering: no request
//! fails, and the new columns appear once the new versions have caught up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conference_example::app::{AppConfig, ReadModels};
use serde_json::{Value, json};

use crate::{Auth, OPERATOR, Server};

async fn keys(server: &Server) -> Vec<String> {
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            "/api/admin/projections",
            None,
            Auth::Operator(OPERATOR),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["live"]["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_move_from_v1_to_today_while_orders_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = cqrs_store_sqlite::SqliteEventStore::open(dir.path().join("web.db"))
        .await
        .unwrap();
    let config = AppConfig {
        read_models: ReadModels::V1,
        ..AppConfig::default()
    };
    let server = Arc::new(Server::start_with(Arc::new(store), Some(dir), config).await);
    let conference = server.published_conference("upgrade", 500).await;
    // V1's read models: no seats left, no is_free_of_charge.
    let (_, view) = server.get("/api/conferences/upgrade").await;
    assert!(view["seat_types"][0]["available"].is_null(), "{view}");
    let (order, placed) = server
        .reserved_order(
            &conference,
            json!([{"seat_type_id": conference.paid, "quantity": 2}]),
        )
        .await;
    assert!(placed["is_free_of_charge"].is_null(), "{placed}");
    assert_eq!(
        keys(&server).await,
        ["conference_directory@v1", "order_views@v1"]
    );

    // Who may see and start it.
    let (status, _) = server.get("/api/admin/projections").await;
    assert_eq!(status, 401);
    let owner = Auth::Owner("ana@example.com", &conference.code);
    let (status, _) = server
        .call(reqwest::Method::GET, "/api/admin/projections", None, owner)
        .await;
    assert_eq!(
        status, 403,
        "`/api/admin` is the operator's (owners see it in the portal)"
    );
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            "/api/admin/projections/upgrade",
            None,
            owner,
        )
        .await;
    assert_eq!(status, 403, "only the operator starts it");

    // Registrants keep ordering while it runs.
    let load = {
        let server = Arc::clone(&server);
        let paid = conference.paid.clone();
        tokio::spawn(async move {
            let mut ok: i64 = 0;
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(1_500) {
                let (status, body) = server
                    .post(
                        "/api/conferences/upgrade/orders",
                        json!({"seats": [{"seat_type_id": paid, "quantity": 1}]}),
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
                let (status, body) = server.get("/api/conferences/upgrade").await;
                assert_eq!(status, 200, "{body}");
                ok += 1;
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/admin/projections/upgrade",
            None,
            Auth::Operator(OPERATOR),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let upgrade_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys(&server).await != ["conference_directory@v2", "order_views@v2"] {
        assert!(Instant::now() < deadline, "the upgrade did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let switched_in = upgrade_started.elapsed();
    let served = load.await.unwrap();
    eprintln!(
        "read models switched {switched_in:?} after the upgrade started, under load; {served} orders placed meanwhile, none failed"
    );
    assert!(served > 0);

    // Today's columns, right: every order placed holds its seats.
    let (_, view) = server.get(&format!("/api/orders/{order}")).await;
    assert_eq!(view["is_free_of_charge"], false, "{view}");
    let (_, body) = server
        .call(
            reqwest::Method::GET,
            "/api/admin/projections",
            None,
            Auth::Operator(OPERATOR),
        )
        .await;
    let head = body["projections"][0]["head"].as_u64().unwrap();
    assert!(head > 0);
    assert_eq!(
        body["projections"][0]["retired"],
        json!(["conference_directory@v1"])
    );
    let left = json!((500 - 2 - served).max(0));
    let mut available = Value::Null;
    for _ in 0..500 {
        let (_, view) = server.get("/api/conferences/upgrade").await;
        available = view["seat_types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == conference.paid.as_str())
            .unwrap()["available"]
            .clone();
        if available == left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        available, left,
        "the seats left, counted from the whole log"
    );
}
