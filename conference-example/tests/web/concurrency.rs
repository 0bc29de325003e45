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
