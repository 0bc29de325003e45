use reqwest::Method;
use serde_json::{Value, json};

use crate::{Auth, OPERATOR, Server};

fn conference_body(slug: &str) -> Value {
    json!({
        "name": "Devconf", "slug": slug, "description": "Talks", "location": "Lisbon",
        "start_date": "2026-09-14T09:00:00Z", "end_date": "2026-09-15T18:00:00Z",
        "owner_name": "Ana Lima", "owner_email": "ana@example.com",
    })
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

pub(crate) async fn owners_manage_conferences_behind_their_credentials(s: &Server) {
    let (status, created) = s.post("/api/conferences", conference_body("owned")).await;
    assert_eq!(status, 201, "{created}");
    let (id, code) = (
        created["id"].as_str().unwrap(),
        created["access_code"].as_str().unwrap(),
    );
    assert_eq!(created["slug"], "owned");
    let (status, taken) = s.post("/api/conferences", conference_body("owned")).await;
    assert_eq!((status, error_code(&taken)), (409, "slug_taken"));

    let owner = Auth::Owner("ANA@example.com", code);
    let update = json!({"name": "Devconf 2026", "description": "More talks", "location": "Porto",
        "start_date": "2026-09-14T09:00:00Z", "end_date": "2026-09-15T18:00:00Z"});
    let path = format!("/api/conferences/{id}");
    assert_eq!(
        s.call(Method::PUT, &path, Some(update.clone()), Auth::None)
            .await
            .0,
        401
    );
    assert_eq!(
        s.call(
            Method::PUT,
            &path,
            Some(update.clone()),
            Auth::Owner("ana@example.com", "WRONG1")
        )
        .await
        .0,
        403
    );
    assert_eq!(
        s.call(
            Method::PUT,
            &path,
            Some(update.clone()),
            Auth::Owner("bo@example.com", code)
        )
        .await
        .0,
        403
    );
    assert_eq!(s.call(Method::PUT, &path, Some(update), owner).await.0, 204);

    let seat = |name: &str, quantity: u32| json!({"name": name, "description": "Seats", "price": "49.90", "quantity": quantity});
    let (status, full) = s
        .call(
            Method::POST,
            &format!("{path}/seat-types"),
            Some(seat("Full pass", 10)),
            owner,
        )
        .await;
    assert_eq!(status, 201, "{full}");
    let (_, gone) = s
        .call(
            Method::POST,
            &format!("{path}/seat-types"),
            Some(seat("Gone soon", 5)),
            owner,
        )
        .await;
    let (full, gone) = (full["id"].as_str().unwrap(), gone["id"].as_str().unwrap());
    assert_eq!(
        s.call(
            Method::PUT,
            &format!("{path}/seat-types/{full}"),
            Some(seat("Full pass", 12)),
            owner
        )
        .await
        .0,
        204
    );
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("{path}/seat-types/{gone}"),
            None,
            owner
        )
        .await
        .0,
        204
    );
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("{path}/seat-types/{gone}"),
            None,
            owner
        )
        .await
        .0,
        404
    );
    // Unpublished: registrants do not see it.
    assert_eq!(s.get("/api/conferences/owned").await.0, 404);
    assert_eq!(
        s.call(Method::POST, &format!("{path}/publish"), None, Auth::None)
            .await
            .0,
        401
    );
    assert_eq!(
        s.call(Method::POST, &format!("{path}/publish"), None, owner)
            .await
            .0,
        204
    );
    let (status, view) = s.get("/api/conferences/owned").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["name"], "Devconf 2026");
    assert_eq!(view["location"], "Porto");
    assert_eq!(view["seat_types"].as_array().unwrap().len(), 1);
    assert_eq!(view["seat_types"][0]["quantity"], 12);
    assert_eq!(view["seat_types"][0]["price"], "49.90");
    let (_, listed) = s.get("/api/conferences").await;
    assert!(
        listed["conferences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["slug"] == "owned")
    );
    // Once published, seat types stay.
    let (status, refused) = s
        .call(
            Method::DELETE,
            &format!("{path}/seat-types/{full}"),
            None,
            owner,
        )
        .await;
    assert_eq!((status, error_code(&refused)), (409, "conflict"));
    assert_eq!(
        s.call(Method::POST, &format!("{path}/unpublish"), None, owner)
            .await
            .0,
        204
    );
    assert_eq!(s.get("/api/conferences/owned").await.0, 404);
    let (status, orders) = s
        .call(Method::GET, &format!("{path}/orders"), None, owner)
        .await;
    assert_eq!(status, 200);
    assert_eq!(orders["orders"], json!([]));
    assert_eq!(
        s.call(
            Method::GET,
            &format!("{path}/orders"),
            None,
            Auth::Owner("ana@example.com", "ABCDEF")
        )
        .await
        .0,
        403
    );
}

pub(crate) async fn registrants_buy_seats_and_see_them_fall(s: &Server) {
    let c = s.published_conference("buying", 5).await;
    let (order, view) = s
        .reserved_order(&c, json!([{"seat_type_id": c.paid, "quantity": 2}]))
        .await;
    assert_eq!(view["status"], "reservation_completed", "{view}");
    assert_eq!(view["conference_slug"], "buying");
    assert_eq!(view["total"], "200");
    assert_eq!(view["is_free_of_charge"], false);
    assert_eq!(view["lines"][0]["requested"], 2);
    assert_eq!(view["lines"][0]["reserved"], 2);
    let (_, conference) = s.get("/api/conferences/buying").await;
    let paid = conference["seat_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == c.paid.as_str())
        .unwrap();
    assert_eq!(paid["available"], 3);

    let registrant = json!({"first_name": "Ana", "last_name": "Lima", "email": "ana@example.com"});
    assert_eq!(
        s.post(
            &format!("/api/orders/{order}/registrant"),
            registrant.clone()
        )
        .await
        .0,
        204
    );
    let (status, payment) = s
        .post(&format!("/api/orders/{order}/payments"), json!({}))
        .await;
    assert_eq!(status, 201, "{payment}");
    let payment = payment["payment_id"].as_str().unwrap();
    // Seats cannot change while the payment is under way.
    let (status, locked) = s
        .call(
            Method::PUT,
            &format!("/api/orders/{order}/seats"),
            Some(json!({"seats": [{"seat_type_id": c.paid, "quantity": 1}]})),
            Auth::None,
        )
        .await;
    assert_eq!(status, 409, "{locked}");
    assert_eq!(
        s.post(&format!("/api/payments/{payment}/complete"), json!({}))
            .await
            .0,
        204
    );
    assert_eq!(
        s.post(&format!("/api/payments/{payment}/cancel"), json!({}))
            .await
            .0,
        409
    );
    // Registrant (4), locked (5), confirmed (6).
    let (_, confirmed) = s.get(&format!("/api/orders/{order}?min_version=6")).await;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    assert_eq!(confirmed["registrant"], registrant);
    let code = confirmed["access_code"].as_str().unwrap().to_owned();
    let (status, found) = s
        .get(&format!(
            "/api/orders/find?email=ana@EXAMPLE.com&access_code={}",
            code.to_lowercase()
        ))
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["order_id"], order.as_str());
    assert_eq!(
        s.get(&format!(
            "/api/orders/find?email=bo@example.com&access_code={code}"
        ))
        .await
        .0,
        404
    );
    let (_, list) = s
        .call(
            Method::GET,
            &format!("/api/conferences/{}/orders", c.id),
            None,
            Auth::Owner("ana@example.com", &c.code),
        )
        .await;
    assert_eq!(list["orders"][0]["status"], "paid");
    assert_eq!(list["orders"][0]["registrant_name"], "Lima, Ana");

    // Asking for more than is left: a partial reservation.
    let (partial, view) = s
        .reserved_order(&c, json!([{"seat_type_id": c.paid, "quantity": 5}]))
        .await;
    assert_eq!(view["status"], "partially_reserved", "{view}");
    assert_eq!(view["lines"][0]["reserved"], 3);
    // Taking fewer replaces the reservation: after placed (1), priced (2), partially reserved
    // and repriced (3, 4) come updated (5), priced (6) and reserved (7).
    let (status, _) = s
        .call(
            Method::PUT,
            &format!("/api/orders/{partial}/seats"),
            Some(json!({"seats": [{"seat_type_id": c.paid, "quantity": 1}]})),
            Auth::None,
        )
        .await;
    assert_eq!(status, 202);
    let (_, view) = s.get(&format!("/api/orders/{partial}?min_version=7")).await;
    assert_eq!(view["status"], "reservation_completed", "{view}");
    // A client-chosen order id places once; posting again changes the seats.
    let mine = uuid::Uuid::now_v7();
    let body =
        |n: u32| json!({"order_id": mine, "seats": [{"seat_type_id": c.free, "quantity": n}]});
    assert_eq!(
        s.post("/api/conferences/buying/orders", body(1)).await.0,
        202
    );
    assert_eq!(
        s.post("/api/conferences/buying/orders", body(2)).await.0,
        202
    );
    let (_, view) = s.get(&format!("/api/orders/{mine}?min_version=4")).await;
    assert_eq!(view["lines"][0]["requested"], 2, "{view}");
}

pub(crate) async fn a_zero_cost_order_is_confirmed_without_payment(s: &Server) {
    let c = s.published_conference("gratis", 5).await;
    let (paid, _) = s
        .reserved_order(&c, json!([{"seat_type_id": c.paid, "quantity": 1}]))
        .await;
    let (status, refused) = s
        .post(&format!("/api/orders/{paid}/confirm"), json!({}))
        .await;
    assert_eq!((status, error_code(&refused)), (409, "not_free"));
    let (order, view) = s
        .reserved_order(&c, json!([{"seat_type_id": c.free, "quantity": 2}]))
        .await;
    assert_eq!(view["is_free_of_charge"], true);
    assert_eq!(view["total"], "0");
    assert_eq!(
        s.post(&format!("/api/orders/{order}/confirm"), json!({}))
            .await
            .0,
        204
    );
    let (_, view) = s.get(&format!("/api/orders/{order}?min_version=5")).await;
    assert_eq!(view["status"], "confirmed", "{view}");
    // No payment was ever started for it.
    let (_, log) = s
        .call(
            Method::GET,
            "/api/messages?type=payments.payment_initiated",
            None,
            Auth::Operator(OPERATOR),
        )
        .await;
    assert_eq!(log["messages"], json!([]));
}

pub(crate) async fn seats_are_assigned_to_attendees(s: &Server) {
    let c = s.published_conference("seating", 5).await;
    let (order, _) = s
        .reserved_order(&c, json!([{"seat_type_id": c.free, "quantity": 2}]))
        .await;
    assert_eq!(
        s.post(&format!("/api/orders/{order}/confirm"), json!({}))
            .await
            .0,
        204
    );
    let mut seats = Value::Null;
    for _ in 0..500 {
        let (status, body) = s.get(&format!("/api/orders/{order}/seats")).await;
        if status == 200 {
            seats = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(seats["seats"].as_array().map(Vec::len), Some(2), "{seats}");
    assert_eq!(seats["seats"][1]["seat_name"], "Party");
    let bo = json!({"first_name": "Bo", "last_name": "Berg", "email": "bo@example.com"});
    assert_eq!(
        s.call(
            Method::PUT,
            &format!("/api/orders/{order}/seats/1"),
            Some(bo.clone()),
            Auth::None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        s.call(
            Method::PUT,
            &format!("/api/orders/{order}/seats/9"),
            Some(bo.clone()),
            Auth::None
        )
        .await
        .0,
        404
    );
    let bad = json!({"first_name": "Bo", "last_name": "Berg", "email": "bo"});
    assert_eq!(
        s.call(
            Method::PUT,
            &format!("/api/orders/{order}/seats/1"),
            Some(bad),
            Auth::None
        )
        .await
        .0,
        400
    );
    let mut assigned = Value::Null;
    for _ in 0..500 {
        let (_, body) = s.get(&format!("/api/orders/{order}/seats")).await;
        if body["seats"][1]["attendee"] == bo {
            assigned = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(assigned["seats"][1]["attendee"], bo);
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/api/orders/{order}/seats/1"),
            None,
            Auth::None
        )
        .await
        .0,
        204
    );
}

pub(crate) async fn bad_requests_are_clear_errors(s: &Server) {
    let c = s.published_conference("strict", 5).await;
    let orders = "/api/conferences/strict/orders";
    // Malformed JSON, and JSON of the wrong shape.
    let response = s
        .client
        .post(s.url(orders))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "invalid");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(s.post(orders, json!({"seats": "many"})).await.0, 400);
    assert_eq!(
        s.post(
            orders,
            json!({"seats": [{"seat_type_id": c.paid, "quantity": -1}]})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        s.post(
            orders,
            json!({"seats": [{"seat_type_id": c.paid, "quantity": 0}]})
        )
        .await
        .0,
        400
    );
    let (status, unknown) = s
        .post(
            orders,
            json!({"seats": [{"seat_type_id": uuid::Uuid::now_v7(), "quantity": 1}]}),
        )
        .await;
    assert_eq!(
        (status, error_code(&unknown)),
        (400, "invalid"),
        "{unknown}"
    );
    assert_eq!(
        s.post(
            orders,
            json!({"seats": [{"seat_type_id": "not-an-id", "quantity": 1}]})
        )
        .await
        .0,
        400
    );
    // Too big a body.
    let huge = "x".repeat(70 * 1024);
    let (status, too_big) = s.post(orders, json!({"seats": [], "padding": huge})).await;
    assert_eq!((status, error_code(&too_big)), (400, "too_large"));
    // Unknown things.
    assert_eq!(s.get("/api/conferences/nowhere").await.0, 404);
    assert_eq!(
        s.post("/api/conferences/nowhere/orders", json!({"seats": []}))
            .await
            .0,
        404
    );
    assert_eq!(
        s.get(&format!("/api/orders/{}", uuid::Uuid::now_v7()))
            .await
            .0,
        404
    );
    assert_eq!(s.get("/api/orders/not-an-id").await.0, 400);
    assert_eq!(
        s.post(
            &format!("/api/payments/{}/complete", uuid::Uuid::now_v7()),
            json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        s.get("/api/orders/find?email=a@b.co&access_code=!!")
            .await
            .0,
        400
    );
    assert_eq!(s.get("/api/no/such/route").await.0, 404);
    // A bad registrant, and a bad conference.
    let (order, _) = s
        .reserved_order(&c, json!([{"seat_type_id": c.paid, "quantity": 1}]))
        .await;
    let (status, bad) = s
        .post(
            &format!("/api/orders/{order}/registrant"),
            json!({"first_name": "A", "last_name": "B", "email": "nope"}),
        )
        .await;
    assert_eq!((status, error_code(&bad)), (400, "invalid"));
    let mut body = conference_body("bad slug!");
    assert_eq!(s.post("/api/conferences", body.clone()).await.0, 400);
    body["slug"] = json!("okslug");
    body["owner_email"] = json!("not-an-email");
    assert_eq!(s.post("/api/conferences", body).await.0, 400);
    let (status, _) = s
        .call(
            Method::POST,
            &format!("/api/conferences/{}/seat-types", c.id),
            Some(json!({"name": "X", "description": "d", "price": -5, "quantity": 1})),
            Auth::Owner("ana@example.com", &c.code),
        )
        .await;
    assert_eq!(status, 400);
}

pub(crate) async fn the_message_log_is_for_owners_and_the_operator(s: &Server) {
    let c = s.published_conference("logged", 5).await;
    let (order, _) = s
        .reserved_order(&c, json!([{"seat_type_id": c.paid, "quantity": 1}]))
        .await;
    assert_eq!(s.get("/api/messages").await.0, 401);
    assert_eq!(
        s.call(Method::GET, "/api/messages", None, Auth::Operator("wrong"))
            .await
            .0,
        403
    );
    assert_eq!(
        s.call(
            Method::GET,
            "/api/messages",
            None,
            Auth::Owner("ana@example.com", "ZZZZZZ")
        )
        .await
        .0,
        403
    );
    let (status, all) = s
        .call(
            Method::GET,
            "/api/messages?limit=1000",
            None,
            Auth::Operator(OPERATOR),
        )
        .await;
    assert_eq!(status, 200);
    let all = all["messages"].as_array().unwrap().clone();
    assert!(all.iter().any(|m| m["type"] == "registration.order_placed"));
    assert!(
        all.iter()
            .any(|m| m["kind"] == "command" && m["type"] == "registration.make_seat_reservation")
    );
    let (_, mine) = s
        .call(
            Method::GET,
            "/api/messages?type=registration.order_placed",
            None,
            Auth::Owner("ana@example.com", &c.code),
        )
        .await;
    let mine = mine["messages"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["stream"], format!("order-{order}"));
    // One flow by its correlation id: the placement, the reservation, the answer.
    let correlation = mine[0]["correlation_id"].as_str().unwrap();
    let (_, flow) = s
        .call(
            Method::GET,
            &format!("/api/messages?correlation_id={correlation}"),
            None,
            Auth::Operator(OPERATOR),
        )
        .await;
    let types: Vec<&str> = flow["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["type"].as_str())
        .collect();
    assert!(types.contains(&"registration.seats_reserved"), "{types:?}");
    for bad in ["since=yesterday", "after=12.3", "after=1.2.3.4", "limit=-1"] {
        let (status, _) = s
            .call(
                Method::GET,
                &format!("/api/messages?{bad}"),
                None,
                Auth::Operator(OPERATOR),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }

    // The owner's log pages by its `next` cursor, losing and repeating nothing.
    let owner = Auth::Owner("ana@example.com", &c.code);
    let (_, whole) = s
        .call(Method::GET, "/api/messages?limit=1000", None, owner)
        .await;
    assert_eq!(whole["next"], Value::Null, "one page holds it all");
    let whole: Vec<Value> = whole["messages"].as_array().unwrap().clone();
    assert!(whole.len() > 4, "{whole:?}");
    let mut paged = Vec::new();
    let mut next = String::new();
    for _ in 0..whole.len() {
        let after = if next.is_empty() {
            String::new()
        } else {
            format!("&after={next}")
        };
        let (status, page) = s
            .call(
                Method::GET,
                &format!("/api/messages?limit=2{after}"),
                None,
                owner,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["messages"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(cursor) => next = cursor.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, whole);
}

/// What an attacker or a careless client sends, and the defects found with it: quantities
/// over the site's cap (one request holding a whole conference), one seat type twice, texts
/// too long or holding control characters, prices with more than two decimals; dates given
/// as a date alone are taken; and deleting an unknown seat type is a 404 even once published.
pub(crate) async fn input_is_bounded_and_cleaned(s: &Server) {
    let c = s.published_conference("bounded", 50).await;
    let orders = "/api/conferences/bounded/orders";
    let (status, body) = s
        .post(
            orders,
            json!({"seats": [{"seat_type_id": c.paid, "quantity": 21}]}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid"), "{body}");
    let (status, body) = s
        .post(
            orders,
            json!({"seats": [{"seat_type_id": c.paid, "quantity": 15}, {"seat_type_id": c.paid, "quantity": 15}]}),
        )
        .await;
    assert_eq!(
        status, 400,
        "one seat type twice counts once, summed: {body}"
    );
    let (_, view) = s
        .reserved_order(
            &c,
            json!([{"seat_type_id": c.paid, "quantity": 2}, {"seat_type_id": c.paid, "quantity": 3}]),
        )
        .await;
    let lines = view["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "one line per seat type: {view}");
    assert_eq!(lines[0]["requested"], 5, "{view}");

    let owner = Auth::Owner("ana@example.com", &c.code);
    let seat_types = format!("/api/conferences/{}/seat-types", c.id);
    for (seat_type, why) in [
        (
            json!({"name": "Pass", "description": "d", "price": "1.234", "quantity": 1}),
            "three decimals",
        ),
        (
            json!({"name": "Pa\u{7}ss", "description": "d", "price": 1, "quantity": 1}),
            "a control character",
        ),
        (
            json!({"name": "P".repeat(71), "description": "d", "price": 1, "quantity": 1}),
            "too long",
        ),
    ] {
        let (status, body) = s
            .call(Method::POST, &seat_types, Some(seat_type), owner)
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid"),
            "{why}: {body}"
        );
    }
    let (status, _) = s
        .call(
            Method::POST,
            &seat_types,
            Some(json!({"name": "Pass", "description": "d", "price": "1.50", "quantity": 1})),
            owner,
        )
        .await;
    assert_eq!(status, 201, "two decimals are a price");
    let (status, body) = s
        .call(
            Method::DELETE,
            &format!("{seat_types}/{}", uuid::Uuid::now_v7()),
            None,
            owner,
        )
        .await;
    assert_eq!(
        status, 404,
        "an unknown seat type, though published: {body}"
    );

    let mut conference = conference_body("dated");
    conference["start_date"] = json!("2026-09-14");
    conference["end_date"] = json!("2026-09-15");
    let (status, created) = s.post("/api/conferences", conference.clone()).await;
    assert_eq!(status, 201, "a date alone is its midnight: {created}");
    let (status, _) = s
        .call(
            Method::POST,
            &format!(
                "/api/conferences/{}/publish",
                created["id"].as_str().unwrap()
            ),
            None,
            Auth::Owner("ana@example.com", created["access_code"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 204);
    // The directory shows it a moment later.
    let mut shown = Value::Null;
    for _ in 0..100 {
        let (status, body) = s.get("/api/conferences/dated").await;
        shown = body;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(shown["start_date"], "2026-09-14T00:00:00Z", "{shown}");
    for (field, value) in [
        ("start_date", json!("14/09/2026")),
        ("name", json!("Dev\u{0}conf")),
        ("description", json!("x".repeat(4_001))),
    ] {
        let mut bad = conference_body("undated");
        bad[field] = value;
        let (status, body) = s.post("/api/conferences", bad).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid"),
            "{field}: {body}"
        );
    }
}

/// Guesses at owner codes and order lookups are throttled per client and per account: ten
/// failures, then `429` with `Retry-After`, for every credential of the account (even the
/// right one) from any client, and for every guess of the client at any account. A client
/// and an account that did nothing wrong are not held up. Clients come from their own
/// loopback addresses.
pub(crate) async fn guesses_are_throttled_per_client_and_per_account(s: &Server) {
    let c = s.published_conference("guarded", 5).await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let (a, b, d) = (from(2), from(3), from(4));
    let owner_get = |client: &reqwest::Client, code: &str| {
        client
            .get(s.url("/api/messages?limit=1"))
            .basic_auth("ana@example.com", Some(code))
            .send()
    };
    for n in 0..10 {
        let response = owner_get(&a, "WRONGWRONG22").await.unwrap();
        assert_eq!(response.status(), 403, "guess {n}");
    }
    let response = owner_get(&a, "WRONGWRONG22").await.unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=7).contains(&retry), "Retry-After: {retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "too_many_attempts");

    // The account waits, whoever asks, with the right code too.
    assert_eq!(owner_get(&b, &c.code).await.unwrap().status(), 429);
    let login = d
        .post(s.url("/admin/login"))
        .form(&[
            ("email", "ana@example.com"),
            ("access_code", c.code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429, "the portal's login too");
    // The client waits, whatever it guesses at.
    let lookup = |client: &reqwest::Client, email: &str| {
        client
            .get(s.url(&format!(
                "/api/orders/find?email={email}&access_code=ZZZZZZ"
            )))
            .send()
    };
    assert_eq!(lookup(&a, "bo@example.com").await.unwrap().status(), 429);
    // Another client at another account is answered as ever.
    assert_eq!(lookup(&b, "bo@example.com").await.unwrap().status(), 404);
}

/// A conference whose queue of orders waiting for seats is full answers `503` with a
/// `Retry-After`, and one client placing orders past its allowance gets `429`; neither
/// places anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_past_the_queue_or_the_client_allowance_are_turned_away() {
    let storage = std::sync::Arc::new(cqrs_core::InMemoryEventStore::new());
    let full = conference_example::app::AppConfig {
        max_awaiting_per_conference: 0,
        ..conference_example::app::AppConfig::default()
    };
    let s = Server::start_with(storage, None, full).await;
    let conference = s.published_conference("queued", 100).await;
    let response = s
        .client
        .post(s.url("/api/conferences/queued/orders"))
        .json(&json!({"seats": [{"seat_type_id": conference.paid, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "overloaded", "{body}");
    let owner = Auth::Owner("ana@example.com", &conference.code);
    let (_, orders) = s
        .call(
            Method::GET,
            &format!("/api/conferences/{}/orders", conference.id),
            None,
            owner,
        )
        .await;
    assert_eq!(
        orders["orders"].as_array().map(Vec::len),
        Some(0),
        "{orders}"
    );

    // The server's own allowance: 20 orders at once from one address, then one every 3 s.
    let storage = std::sync::Arc::new(cqrs_core::InMemoryEventStore::new());
    let s = Server::start_state(
        storage,
        None,
        conference_example::app::AppConfig::default(),
        |state| state,
    )
    .await;
    let conference = s.published_conference("limited", 100).await;
    let order = json!({"seats": [{"seat_type_id": conference.paid, "quantity": 1}]});
    for n in 0..20 {
        let (status, body) = s
            .post("/api/conferences/limited/orders", order.clone())
            .await;
        assert_eq!(status, 202, "order {n}: {body}");
    }
    let response = s
        .client
        .post(s.url("/api/conferences/limited/orders"))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=4).contains(&wait), "{wait}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "too_many_orders", "{body}");
}

/// An owner replaces their access code: the old one opens nothing from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_rotate_their_access_code() {
    let s = Server::start(
        std::sync::Arc::new(cqrs_core::InMemoryEventStore::new()),
        None,
    )
    .await;
    let conference = s.published_conference("rotated", 5).await;
    let path = format!("/api/conferences/{}/access-code", conference.id);
    let (status, _) = s.call(Method::POST, &path, None, Auth::None).await;
    assert_eq!(status, 401);
    let old = Auth::Owner("ana@example.com", &conference.code);
    let (status, body) = s.call(Method::POST, &path, None, old).await;
    assert_eq!(status, 200, "{body}");
    let new = body["access_code"].as_str().unwrap().to_owned();
    assert_eq!(new.len(), 12);
    assert_ne!(new, conference.code);
    let orders = format!("/api/conferences/{}/orders", conference.id);
    assert_eq!(s.call(Method::GET, &orders, None, old).await.0, 403);
    let new = Auth::Owner("ana@example.com", &new);
    assert_eq!(s.call(Method::GET, &orders, None, new).await.0, 200);
}

/// Every list pages with a stable cursor: each page resumes after the last item of the one
/// before, so what is added meanwhile never repeats or skips an item; a bad cursor is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_stable_cursors() {
    let s = Server::start(
        std::sync::Arc::new(cqrs_core::InMemoryEventStore::new()),
        None,
    )
    .await;
    let mut slugs = Vec::new();
    for n in 0..5 {
        slugs.push(s.published_conference(&format!("paged{n}"), 50).await);
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &next {
            None => "/api/conferences?limit=2".to_owned(),
            Some(after) => format!("/api/conferences?limit=2&after={after}"),
        };
        let (status, page) = s.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["conferences"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|c| c["slug"].as_str().unwrap().to_owned()));
        pages += 1;
        if pages == 1 {
            // One is added between the pages: it comes last, nothing repeats.
            slugs.push(s.published_conference("paged_late", 50).await);
        }
        next = page["next"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    let expected: Vec<String> = slugs.iter().map(|c| c.slug.clone()).collect();
    assert_eq!(
        seen, expected,
        "every conference once, in the order created"
    );
    assert_eq!(pages, 3);
    let (status, body) = s.get("/api/conferences?after=not-an-id").await;
    assert_eq!((status, error_code(&body)), (400, "invalid"));

    // The owner's orders, with their attendees, page the same way.
    let conference = &slugs[0];
    let mut placed = Vec::new();
    for _ in 0..5 {
        let (order, _) = s
            .reserved_order(
                conference,
                json!([{"seat_type_id": conference.paid, "quantity": 1}]),
            )
            .await;
        placed.push(order);
    }
    let owner = Auth::Owner("ana@example.com", &conference.code);
    let mut seen = Vec::new();
    let mut path = format!("/api/conferences/{}/orders?limit=2", conference.id);
    loop {
        let (status, page) = s.call(Method::GET, &path, None, owner).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["order_id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(after) => {
                path = format!(
                    "/api/conferences/{}/orders?limit=2&after={after}",
                    conference.id
                );
            }
            None => break,
        }
    }
    placed.sort();
    assert_eq!(seen, placed);
}

/// Long-polling for an order's next version is for orders the store holds: an unknown
/// order is a 404 at once (it held the request for 5 s before), a placed one is found even
/// when asked for before its read model has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_orders_are_not_waited_for() {
    let s = Server::start(
        std::sync::Arc::new(cqrs_core::InMemoryEventStore::new()),
        None,
    )
    .await;
    let conference = s.published_conference("waits", 5).await;
    let started = std::time::Instant::now();
    let (status, body) = s
        .get(&format!(
            "/api/orders/{}?min_version=1",
            uuid::Uuid::now_v7()
        ))
        .await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the 404 did not wait for the 5 s bound: {:?}",
        started.elapsed()
    );
    let (status, placed) = s
        .post(
            &format!("/api/conferences/{}/orders", conference.slug),
            json!({"seats": [{"seat_type_id": conference.paid, "quantity": 1}]}),
        )
        .await;
    assert_eq!(status, 202, "{placed}");
    let order = placed["order_id"].as_str().unwrap();
    let (status, view) = s.get(&format!("/api/orders/{order}?min_version=1")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["order_id"], order);
}
