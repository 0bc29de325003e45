//! `GET /metrics`: the operator's, in Prometheus' text format, with the framework's metrics and
//! the app's; a read model's lag falls to zero while it is rebuilt beside the live one.
//!
//! Its own test binary: the recorder is global, and another test's read models (with the same
//! keys) would move the same gauges.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conference_example::app::{AppConfig, ConferenceApp, ReadModels};
use conference_example::domain::SeatQuantity;
use conference_example::web::{WebState, serve};
use cqrs_core::{InMemoryEventStore, Storage, SystemClock};

const OPERATOR: &str = "operator-secret";

/// The value of the sample of `name` whose labels contain `labels` (as written in the text).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(labels))
        })
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_commands_and_a_rebuilds_lag_falling() {
    // Installed first, as `serve` does: what happens before is not recorded.
    let recorder = conference_example::telemetry::prometheus();
    assert!(recorder.is_some());
    let storage: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
    let config = AppConfig {
        read_models: ReadModels::V1,
        ..AppConfig::default()
    };
    let app = ConferenceApp::new(Arc::clone(&storage), Arc::new(SystemClock), config);
    let (conference, seat_type, code) = app.publish_example("measured", 5_000).await.unwrap();
    // Enough history for a rebuild to take several batches.
    for _ in 0..300 {
        app.place_order(
            conference,
            vec![SeatQuantity {
                seat_type,
                quantity: 1,
            }],
        )
        .await
        .unwrap();
    }
    app.settle().await.unwrap();
    let head = storage.head().await.unwrap().get();

    let engine = app.start();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = WebState::new(app.clone(), Some(OPERATOR.into())).with_metrics(recorder);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let metrics = || async {
        let response = client
            .get(format!("{base}/metrics"))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        response.text().await.unwrap()
    };

    // The operator's alone.
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(client.get(format!("{base}/metrics"))).await, 401);
    assert_eq!(
        status(client.get(format!("{base}/metrics")).bearer_auth("guess")).await,
        403
    );
    assert_eq!(
        status(
            client
                .get(format!("{base}/metrics"))
                .basic_auth("ana@example.com", Some(code.to_string()))
        )
        .await,
        403,
        "an owner's code does not open it"
    );

    let text = metrics().await;
    let placed = sample(
        &text,
        "cqrs_commands_total",
        r#"handler="order",command="registration.register_to_conference",outcome="accepted""#,
    );
    assert_eq!(placed, Some(300.0), "{text}");
    // Counts, not buckets: `sample` finds a histogram's first bucket, which is
    // rightly empty when every command took longer than it (a slow machine).
    for (name, labels) in [
        ("cqrs_command_duration_seconds_count", r#"handler="seats""#),
        ("cqrs_store_duration_seconds_count", r#"operation="commit""#),
        ("cqrs_process_events_total", r#"process="registration""#),
        ("cqrs_dispatch_deliveries_total", r#"outcome="delivered""#),
        ("cqrs_projection_position", r#"projection="order_views@v1""#),
        ("http_server_requests_total", r#"status="401""#),
    ] {
        assert!(
            sample(&text, name, labels).is_some_and(|v| v > 0.0),
            "no {name}{{{labels}}} in {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "cqrs_projection_lag_events",
            r#"projection="order_views@v1""#
        ),
        Some(0.0),
        "the live read model has caught up"
    );
    assert!(text.contains("# HELP cqrs_commands_total"), "described");

    // The upgrade builds today's read models beside V1's: their lag falls to zero.
    let response = client
        .post(format!("{base}/api/admin/projections/upgrade"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let caught_up = loop {
        let text = metrics().await;
        let lag = text
            .lines()
            .filter(|l| l.starts_with("cqrs_projection_lag_events{projection=\"order_views@"))
            .find(|l| !l.contains("@v1\""))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok());
        if let Some(lag) = lag {
            if seen.last() != Some(&lag) {
                seen.push(lag);
            }
            if lag == 0.0 {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new read model caught up: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!("order views' lag seen while they were rebuilt: {seen:?} (head {head})");
    let position = caught_up
        .lines()
        .filter(|l| l.starts_with("cqrs_projection_position{projection=\"order_views@"))
        .find(|l| !l.contains("@v1\""))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .unwrap();
    #[expect(clippy::cast_precision_loss, reason = "a small test log")]
    let head = head as f64;
    assert!(position >= head, "{position} < {head}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    engine.stop().await;
}
