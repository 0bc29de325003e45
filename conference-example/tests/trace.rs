//! One HTTP request's trace, followed through the messages it leads to: the command it sends,
//! that command's events, the registration process, the commands the process sends, the expiry
//! timeout delivered an hour of manual clock later, and the read models' updates.
//!
//! Spans are exported to memory through `tracing-opentelemetry`, as `serve --otlp-endpoint`
//! exports them over OTLP. Its own test binary: the subscriber is global, so that the tasks of
//! every thread report to it.
#![cfg(feature = "otel")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use conference_example::app::{AppConfig, ConferenceApp};
use conference_example::web::{WebState, serve};
use cqrs_core::trace::{TRACEPARENT, TraceParent};
use cqrs_core::{InMemoryEventStore, LogQuery, LoggedMessage, ManualClock, Storage};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Spans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Spans {
    /// The names of the spans of trace `trace_id`.
    fn in_trace(&self, trace_id: u128) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| u128::from_be_bytes(s.span_context.trace_id().to_bytes()) == trace_id)
            .map(|s| s.name.to_string())
            .collect()
    }

    /// The attribute `key` of each span named `name` that links to trace `trace_id`.
    fn linking_to(&self, name: &str, key: &str, trace_id: u128) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                s.links.iter().any(|link| {
                    u128::from_be_bytes(link.span_context.trace_id().to_bytes()) == trace_id
                })
            })
            .filter_map(|s| {
                s.attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == key)
                    .map(|kv| kv.value.to_string())
            })
            .collect()
    }
}

/// The type names and targets of the messages in the log carrying trace `trace_id`.
async fn logged_in_trace(storage: &dyn Storage, trace_id: u128) -> Vec<(String, String)> {
    let query = LogQuery {
        limit: 100_000,
        ..LogQuery::new()
    };
    storage
        .query_log(&query)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|entry| {
            let (headers, kind, name, stream) = match &entry.message {
                LoggedMessage::Command(c) => (&c.headers, "command", &c.command_type, &c.target),
                LoggedMessage::Event(e) => (&e.metadata.headers, "event", &e.event_type, &e.stream),
            };
            let parent = TraceParent::of(headers)?;
            (parent.trace_id == trace_id)
                .then(|| (format!("{kind} {name}"), stream.category().to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_followed_through_every_message_it_leads_to() {
    let spans = Spans::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let storage: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new("2026-05-04T09:00:00Z".parse().unwrap());
    let app = ConferenceApp::new(
        Arc::clone(&storage),
        Arc::new(clock.clone()),
        AppConfig::default(),
    );
    let (_, seat_type, _) = app.publish_example("traced", 10).await.unwrap();

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, WebState::new(app.clone(), None), async {
        let _ = stopped.await;
    }));

    // The registrant's browser (or a gateway) started the trace.
    let trace_id = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128;
    let response = reqwest::Client::new()
        .post(format!("{base}/api/conferences/traced/orders"))
        .header(
            TRACEPARENT,
            format!("00-{trace_id:032x}-00f067aa0ba902b7-01"),
        )
        .json(&serde_json::json!({"seats": [{"seat_type_id": seat_type, "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    app.settle().await.unwrap();

    let logged = logged_in_trace(&*storage, trace_id).await;
    let has = |what: &str, category: &str| {
        logged
            .iter()
            .any(|(name, stream)| name == what && stream == category)
    };
    assert!(
        has("command registration.register_to_conference", "order"),
        "{logged:?}"
    );
    assert!(
        has("event registration.order_placed", "order"),
        "{logged:?}"
    );
    // The registration process took the event and sent the seats' command, in the trace.
    let names = spans.in_trace(trace_id);
    for name in ["POST", "cqrs.command", "cqrs.process", "cqrs.dispatch"] {
        assert!(names.iter().any(|n| n == name), "no {name} in {names:?}");
    }
    assert!(
        logged
            .iter()
            .any(|(name, stream)| name.starts_with("event ") && stream == "seats"),
        "the seats' events carry the trace: {logged:?}"
    );
    // The read models' batches link to it.
    let read_models = spans.linking_to("cqrs.projection", "projection", trace_id);
    assert!(
        read_models.iter().any(|key| key.contains("order")),
        "{read_models:?}"
    );

    // An hour later the unpaid order expires: the timeout is still in the request's trace.
    let dispatched_before = names.iter().filter(|n| *n == "cqrs.dispatch").count();
    clock.advance(chrono::Duration::hours(1));
    app.settle().await.unwrap();
    let logged = logged_in_trace(&*storage, trace_id).await;
    assert!(
        logged.iter().any(|(name, stream)| {
            name == "command registration.expire_registration_process" && stream == "registration"
        }),
        "{logged:?}"
    );
    assert!(
        logged
            .iter()
            .any(|(name, _)| name == "event registration.order_expired"),
        "{logged:?}"
    );
    let names = spans.in_trace(trace_id);
    assert!(
        names.iter().filter(|n| *n == "cqrs.dispatch").count() > dispatched_before,
        "the timeout's delivery is in the trace: {names:?}"
    );
    provider.shutdown().unwrap();
}
