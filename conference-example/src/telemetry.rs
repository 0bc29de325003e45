//! Metrics in Prometheus' text format, for `GET /metrics` (the operator's).
//!
//! The framework's metrics (`cqrs_core::metric`) and the app's own below go through the
//! `metrics` facade to one Prometheus recorder, installed once per process.
//!
//! | Name | Kind | Unit | Labels | What |
//! |---|---|---|---|---|
//! | `http_server_requests_total` | counter | requests | `method`, `status` | requests answered |
//! | `http_server_request_duration_seconds` | histogram | seconds | `method` | from the request's arrival to its answer's headers |
//! | `conference_orders_awaiting_seats` | gauge | orders | — | orders accepted and not yet answered by the seats (the back-pressure bound's measure), as seen at the last order placed |
//! | `conference_orders_turned_away_total` | counter | orders | `reason` | orders refused before they were placed: `overloaded` (503) or `too_many_orders` (429) |

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by method and status.
pub const HTTP_REQUESTS: &str = "http_server_requests_total";
/// How long requests took, by method.
pub const HTTP_DURATION: &str = "http_server_request_duration_seconds";
/// Orders waiting for their seats.
pub const ORDERS_AWAITING: &str = "conference_orders_awaiting_seats";
/// Orders refused before they were placed, by reason.
pub const ORDERS_TURNED_AWAY: &str = "conference_orders_turned_away_total";

/// Latency buckets, from 100 µs to 30 s.
const SECONDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Writes per group commit.
const WRITES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process's Prometheus recorder, installed on first use; `None` when the process had
/// installed another recorder before (an embedding application's: its metrics go there).
///
/// # Examples
///
/// ```
/// let handle = conference_example::telemetry::prometheus().expect("no other recorder");
/// metrics::counter!("conference_example_doc_total").increment(1);
/// assert!(handle.render().contains("conference_example_doc_total 1"));
/// ```
#[must_use]
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(cqrs_core::metric::GROUP_COMMIT_SIZE.into()),
                        WRITES,
                    )
                });
            let handle = match builder.map(PrometheusBuilder::install_recorder) {
                Ok(Ok(handle)) => handle,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "no /metrics: a metrics recorder was installed already");
                    return None;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "no /metrics: the Prometheus recorder was refused");
                    return None;
                }
            };
            cqrs_core::metric::describe();
            describe();
            Some(handle)
        })
        .clone()
}

/// Describes the app's own metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "Requests answered, by method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "From a request's arrival to its answer, by method"
    );
    describe_gauge!(
        ORDERS_AWAITING,
        Unit::Count,
        "Orders accepted and not yet answered by the seats, at the last order placed"
    );
    describe_counter!(
        ORDERS_TURNED_AWAY,
        Unit::Count,
        "Orders refused before they were placed, by reason"
    );
}
