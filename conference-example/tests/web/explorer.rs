//! The operator's explorer over plain HTTP: who may see it, the streams by category, a
//! stream's events a page at a time, and clear pages for what does not exist.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;

use crate::{OPERATOR, Server, sqlite};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn page(server: &Server, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = client().get(server.url(path));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Signs in with `token`; the cookie set, if any.
async fn sign_in(server: &Server, token: &str) -> (u16, Option<String>) {
    let response = client()
        .post(server.url("/explorer/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let cookie = response.headers().get(SET_COOKIE).map(|set| {
        let set = set.to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        set.split(';').next().unwrap().to_owned()
    });
    (response.status().as_u16(), cookie)
}

/// The value of the form token on a page.
fn form_token(page: &str) -> String {
    let at = page.find("name=\"form_token\" value=\"").unwrap() + 25;
    page[at..at + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_is_the_operators_and_browses_streams_a_page_at_a_time() {
    let server = sqlite().await;
    let conference = server.published_conference("explored", 500).await;
    let (order, _) = server
        .reserved_order(
            &conference,
            json!([{"seat_type_id": conference.paid, "quantity": 1}]),
        )
        .await;

    // Nobody else.
    let (status, _) = page(&server, "/explorer/streams", None).await;
    assert_eq!(status, 401);
    let response = client().get(server.url("/explorer")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/explorer/login");
    let (status, cookie) = sign_in(&server, "not-the-token").await;
    assert_eq!((status, cookie), (401, None));
    let (status, _) = page(
        &server,
        "/explorer/streams",
        Some("conference_operator=forged"),
    )
    .await;
    assert_eq!(status, 401, "a cookie not signed by the server");

    let (status, cookie) = sign_in(&server, OPERATOR).await;
    assert_eq!(status, 303);
    let signed_in = cookie.unwrap();
    let cookie = Some(signed_in.as_str());
    let (status, overview) = page(&server, "/explorer", cookie).await;
    assert_eq!(status, 200, "{overview}");
    for category in ["conference", "order", "seats"] {
        assert!(
            overview.contains(&format!("/explorer/streams?category={category}\"")),
            "{category} in {overview}"
        );
    }

    // The live chart, sampled every second from the first look.
    assert!(overview.contains("id=\"live-chart\""), "{overview}");
    let (status, _) = page(&server, "/explorer/chart.svg", None).await;
    assert_eq!(status, 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = client()
            .get(server.url("/explorer/chart.svg"))
            .header(COOKIE, &signed_in)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "image/svg+xml");
        let svg = response.text().await.unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        if svg.contains("<polyline") {
            assert!(svg.contains("events/s") && svg.contains("lag (events)"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no line drawn: {svg}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let (status, orders) = page(&server, "/explorer/streams?category=order", cookie).await;
    assert_eq!(status, 200);
    assert!(
        orders.contains(&format!("/explorer/streams/order-{order}\"")),
        "{orders}"
    );
    let (status, stream) = page(&server, &format!("/explorer/streams/order-{order}"), cookie).await;
    assert_eq!(status, 200, "{stream}");
    for shown in [
        "registration.order_placed",
        "Payload as stored",
        "Correlation",
        "Event id",
        "position",
    ] {
        assert!(stream.contains(shown), "{shown} in {stream}");
    }

    // The order's story as a picture: its flows' commands and events, lane by stream, and
    // the read models that applied them.
    let (status, timeline) = page(
        &server,
        &format!("/explorer/streams/order-{order}/timeline"),
        cookie,
    )
    .await;
    assert_eq!(status, 200, "{timeline}");
    for shown in [
        "<svg",
        "registration.register_to_conference",
        "registration.order_placed",
        "registration.make_seat_reservation",
        "registration.seats_reserved",
        "class=\"message command\"",
        "class=\"message event\"",
        "marker-end=\"url(#arrow)\"",
        "order_views@",
        "mark applied",
    ] {
        assert!(timeline.contains(shown), "{shown} in {timeline}");
    }
    let at = stream.find("/explorer/timeline/").unwrap();
    let flow = &stream[at..at + "/explorer/timeline/".len() + 36];
    let (status, one) = page(&server, flow, cookie).await;
    assert_eq!(status, 200, "{flow}");
    assert!(one.contains("registration.order_placed"));
    assert!(
        one.contains("class=\"message waiting\"")
            && one.contains("scheduled registration.expire_registration_process"),
        "the expiry waits: {one}"
    );

    // A search by name, and pages of a long list.
    for _ in 0..55 {
        server
            .post(
                &format!("/api/conferences/{}/orders", conference.slug),
                json!({"seats": [{"seat_type_id": conference.paid, "quantity": 1}]}),
            )
            .await;
    }
    let (_, first) = page(&server, "/explorer/streams?category=order", cookie).await;
    assert_eq!(first.matches("<tr>").count(), 51, "a header and 50 streams");
    let at = first.find("rel=\"next\" href=\"").unwrap() + 17;
    let next = first[at..first[at..].find('"').unwrap() + at].replace("&amp;", "&");
    let (status, second) = page(&server, &next, cookie).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(
        second.matches("<tr>").count(),
        7,
        "a header and the other 6 of 56"
    );
    let prefix = &order.to_string()[..12];
    let (_, found) = page(
        &server,
        &format!("/explorer/streams?category=order&prefix={prefix}"),
        cookie,
    )
    .await;
    assert!(found.contains(&format!("order-{order}")), "{found}");

    // What is not there is a page that says so.
    for (path, code) in [
        ("/explorer/streams/order-nothing", 404),
        ("/explorer/streams/%01", 404),
        ("/explorer/streams/order-x?from=nope", 400),
        ("/explorer/timeline/not-a-uuid", 404),
        (
            "/explorer/timeline/00000000-0000-0000-0000-000000000000",
            404,
        ),
        ("/explorer/streams/order-nothing/timeline", 404),
    ] {
        let (status, body) = page(&server, path, cookie).await;
        assert_eq!(status, code, "{path}: {body}");
        assert!(body.starts_with("<!DOCTYPE html>"), "{path}");
    }

    // Read models: positions and a rebuild beside the live one.
    let (status, models) = page(&server, "/explorer/read-models", cookie).await;
    assert_eq!(status, 200);
    assert!(models.contains("order_views") && models.contains("conference_directory"));
    let token = form_token(&models);
    let post = |path: &'static str, token: String| {
        let signed_in = signed_in.clone();
        let url = server.url(path);
        async move {
            client()
                .post(url)
                .header(COOKIE, signed_in)
                .form(&[("form_token", token)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post("/explorer/read-models/order_views/rebuild", "forged".into()).await,
        403
    );
    assert_eq!(
        post("/explorer/read-models/nothing/rebuild", token.clone()).await,
        404
    );
    assert_eq!(
        post("/explorer/read-models/order_views/rebuild", token.clone()).await,
        303
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, models) = page(&server, "/explorer/read-models", cookie).await;
        if models.contains("Retired: <code>order_views@") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{models}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Process instances, and the commands they scheduled.
    let (status, processes) = page(&server, "/explorer/processes", cookie).await;
    assert_eq!(status, 200);
    assert!(processes.contains("registration-"), "{processes}");
    let (status, scheduled) = page(&server, "/explorer/scheduled", cookie).await;
    assert_eq!(status, 200);
    assert!(
        scheduled.contains("registration.expire_registration_process"),
        "{scheduled}"
    );
    let at = scheduled.find("/explorer/scheduled/").unwrap() + "/explorer/scheduled/".len();
    let id = scheduled[at..at + 36].to_owned();
    let discard = format!("/explorer/scheduled/{id}/discard");
    let response = client()
        .post(server.url(&discard))
        .header(COOKIE, &signed_in)
        .form(&[("form_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "{discard}");
    let (_, scheduled) = page(&server, "/explorer/scheduled", cookie).await;
    assert!(!scheduled.contains(&id), "discarded: {id}");
    let (status, _) = page(&server, "/explorer/scheduled?after=nope", cookie).await;
    assert_eq!(status, 400);

    // Signing out needs the session's form token, and ends it.
    let response = client()
        .post(server.url("/explorer/logout"))
        .header(COOKIE, &signed_in)
        .form(&[("form_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let token = form_token(&overview);
    let response = client()
        .post(server.url("/explorer/logout"))
        .header(COOKIE, &signed_in)
        .form(&[("form_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert!(
        response.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("conference_operator=;")
    );
}

/// Polls the dead-letters page until `done` holds for it.
async fn dead_letters_until(server: &Server, cookie: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, listed) = page(server, "/explorer/dead-letters", Some(cookie)).await;
        assert_eq!(status, 200, "{listed}");
        if done(&listed) {
            return listed;
        }
        assert!(std::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_keeps_failing_is_a_dead_letter_to_retry_or_discard() {
    use cqrs_core::{CommandEnvelope, ScheduledCommand, Storage};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Storage> = Arc::new(
        cqrs_store_sqlite::SqliteEventStore::open(dir.path().join("web.db"))
            .await
            .unwrap(),
    );
    let config = conference_example::app::AppConfig {
        delivery_attempts: 2,
        delivery_retry_after: std::time::Duration::from_secs(1),
        ..conference_example::app::AppConfig::default()
    };
    let server = Server::start_with(Arc::clone(&store), Some(dir), config).await;
    // A command this build cannot handle (as after a rolling upgrade that went back), to an
    // order: every delivery fails.
    let poison = |n: u32| CommandEnvelope {
        id: uuid::Uuid::new_v4(),
        target: format!("order-poison-{n}").parse().unwrap(),
        command_type: "order.recalculate_totals_v9".into(),
        payload: cqrs_core::Json::parse(r#"{"currency":"EUR"}"#).unwrap(),
        correlation_id: Some(uuid::Uuid::new_v4()),
        causation_id: None,
        headers: Default::default(),
    };
    let (first, second) = (poison(1), poison(2));
    store
        .schedule(vec![
            ScheduledCommand::new(first.clone(), chrono::Utc::now()),
            ScheduledCommand::new(second.clone(), chrono::Utc::now()),
        ])
        .await
        .unwrap();

    let (_, signed_in) = sign_in(&server, OPERATOR).await;
    let signed_in = signed_in.unwrap();
    let (status, _) = page(&server, "/explorer/dead-letters", None).await;
    assert_eq!(status, 401, "the operator's only");
    let listed = dead_letters_until(&server, &signed_in, |p| {
        p.contains(&first.id.to_string()) && p.contains(&second.id.to_string())
    })
    .await;
    assert!(
        listed.contains("order.recalculate_totals_v9")
            && listed.contains("2 attempts")
            && listed.contains("gave up after 2 attempts: ")
            && listed.contains("&quot;currency&quot;: &quot;EUR&quot;"),
        "the command, its attempts, the reason and the payload: {listed}"
    );
    let (_, scheduled) = page(&server, "/explorer/scheduled", Some(&signed_in)).await;
    assert!(
        !scheduled.contains(&first.id.to_string()),
        "a dead letter is no longer scheduled: {scheduled}"
    );
    // Its flow's timeline shows it, though the message log does not hold it.
    let flow = first.correlation_id.unwrap();
    let (status, timeline) = page(
        &server,
        &format!("/explorer/timeline/{flow}"),
        Some(&signed_in),
    )
    .await;
    assert_eq!(status, 200, "{timeline}");
    assert!(
        timeline.contains("dead letter: order.recalculat")
            && timeline.contains("order.recalculate_totals_v9 → order-poison-1")
            && timeline.contains("1 dead letter"),
        "{timeline}"
    );
    let token = form_token(&listed);
    let post = async |path: String, token: &str| {
        client()
            .post(server.url(&path))
            .header(COOKIE, &signed_in)
            .form(&[("form_token", token)])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    // Forged forms, unknown and malformed ids get clear answers and change nothing.
    let retry = format!("/explorer/dead-letters/{}/retry", first.id);
    assert_eq!(post(retry.clone(), "forged").await, 403);
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        post(format!("/explorer/dead-letters/{unknown}/retry"), &token).await,
        404
    );
    assert_eq!(
        post(format!("/explorer/dead-letters/{unknown}/discard"), &token).await,
        404
    );
    assert_eq!(
        post("/explorer/dead-letters/not-an-id/retry".into(), &token).await,
        404
    );
    let (status, _) = page(
        &server,
        "/explorer/dead-letters?after=nope",
        Some(&signed_in),
    )
    .await;
    assert_eq!(status, 400);
    assert!(store.find_parked(first.id).await.unwrap().is_some());

    // Retry: delivered again with fresh attempts, and parked again when they fail too.
    assert_eq!(post(retry.clone(), &token).await, 303);
    assert!(
        store.find_parked(first.id).await.unwrap().is_none(),
        "back in the schedule"
    );
    assert_eq!(post(retry, &token).await, 404, "retried already");
    dead_letters_until(&server, &signed_in, |p| p.contains(&first.id.to_string())).await;
    assert_eq!(
        store
            .find_parked(first.id)
            .await
            .unwrap()
            .unwrap()
            .scheduled
            .attempts,
        2,
        "the attempts were counted afresh"
    );

    // Discard: recorded as rejected in the message log, never delivered.
    let discard = format!("/explorer/dead-letters/{}/discard", second.id);
    assert_eq!(post(discard.clone(), &token).await, 303);
    let listed =
        dead_letters_until(&server, &signed_in, |p| !p.contains(&second.id.to_string())).await;
    assert!(listed.contains(&first.id.to_string()), "{listed}");
    let record = store.find_command(second.id).await.unwrap().unwrap();
    let cqrs_core::Outcome::Rejected { message, .. } = record.outcome else {
        panic!("{:?}", record.outcome)
    };
    assert!(
        message.starts_with("discarded by the operator (gave up after 2 attempts: "),
        "{message}"
    );
    assert_eq!(post(discard, &token).await, 404, "discarded already");
}
