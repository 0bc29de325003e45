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

// ----- the explorer's live chart -----

/// How many samples the chart keeps: two minutes, one a second.
const SAMPLES: usize = 120;

/// One second's sample: the log's head and how far the slowest read model is behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it was taken.
    pub at: std::time::Instant,
    /// The log's head position.
    pub head: u64,
    /// Events the slowest live read model is behind the head.
    pub lag: u64,
}

/// The samples of the last two minutes, taken by a task that starts on the first look and
/// stops when the server's state is dropped.
#[derive(Debug, Default)]
pub struct Samples {
    taken: std::sync::Mutex<std::collections::VecDeque<Sample>>,
    started: std::sync::atomic::AtomicBool,
}

impl Samples {
    /// Starts sampling `app` every second, once (later calls do nothing).
    pub fn start(self: &std::sync::Arc<Self>, app: &crate::app::ConferenceApp) {
        use std::sync::atomic::Ordering;
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let samples = std::sync::Arc::downgrade(self);
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(samples) = samples.upgrade() else {
                    return;
                };
                match app.read_model_status().await {
                    Ok(all) => {
                        let head = all.first().map_or(0, |s| s.head.get());
                        let lag = all
                            .iter()
                            .map(|s| head.saturating_sub(s.live.position.get()))
                            .max()
                            .unwrap_or(0);
                        samples.push(Sample {
                            at: std::time::Instant::now(),
                            head,
                            lag,
                        });
                    }
                    Err(err) => {
                        tracing::warn!(error = %cqrs_core::ErrorChain(&err), "the live chart missed a sample");
                    }
                }
            }
        });
    }

    fn push(&self, sample: Sample) {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if taken.len() == SAMPLES {
            taken.pop_front();
        }
        taken.push_back(sample);
    }

    /// The samples, oldest first.
    #[must_use]
    pub fn snapshot(&self) -> Vec<Sample> {
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }
}

/// The chart of `samples` as an SVG image: events per second (the head's rise between two
/// samples) above, the slowest read model's lag below, each scaled to its own maximum.
#[must_use]
pub fn chart(samples: &[Sample]) -> String {
    use std::fmt::Write as _;
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const PANEL: f64 = 80.0;
    let rates: Vec<f64> = samples
        .windows(2)
        .map(|w| {
            let seconds = w[1].at.duration_since(w[0].at).as_secs_f64().max(1e-3);
            f64_of(w[1].head.saturating_sub(w[0].head)) / seconds
        })
        .collect();
    let lags: Vec<f64> = samples.iter().skip(1).map(|s| f64_of(s.lag)).collect();
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="system-ui, sans-serif" font-size="11"><rect width="{W}" height="{H}" fill="#fff"/>"##
    );
    for (i, (label, values, colour)) in [
        ("events/s", &rates, "#1a56db"),
        ("lag (events)", &lags, "#b3261e"),
    ]
    .into_iter()
    .enumerate()
    {
        let top = 20.0 + f64_of(i as u64) * (PANEL + 30.0);
        let max = values.iter().copied().fold(0.0_f64, f64::max);
        let last = values.last().copied().unwrap_or(0.0);
        let _ = write!(
            svg,
            r##"<text x="8" y="{}" fill="#5f6368">{label}: {last:.0} now, {max:.0} at most</text><line x1="60" y1="{}" x2="{}" y2="{}" stroke="#dadce0"/>"##,
            top - 6.0,
            top + PANEL,
            W - 10.0,
            top + PANEL
        );
        if values.len() > 1 {
            let step = (W - 70.0) / f64_of((SAMPLES - 1) as u64);
            let start = 60.0 + step * f64_of((SAMPLES - 1 - values.len()) as u64);
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let y = top + PANEL - if max > 0.0 { v / max * PANEL } else { 0.0 };
                    format!("{:.1},{:.1}", start + step * f64_of(j as u64), y)
                })
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/>"#,
                points.join(" ")
            );
        } else {
            let _ = write!(
                svg,
                r##"<text x="70" y="{}" fill="#5f6368">sampling…</text>"##,
                top + PANEL / 2.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

#[expect(
    clippy::cast_precision_loss,
    reason = "chart coordinates: a count's last digits do not show"
)]
fn f64_of(n: u64) -> f64 {
    n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_the_rate_between_samples_and_the_lag() {
        let start = std::time::Instant::now();
        let samples: Vec<Sample> = (0..5_u64)
            .map(|i| Sample {
                at: start + std::time::Duration::from_secs(i),
                head: i * 250,
                lag: 40 - i * 10,
            })
            .collect();
        let svg = chart(&samples);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("events/s: 250 now, 250 at most"), "{svg}");
        assert!(svg.contains("lag (events): 0 now, 30 at most"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(chart(&samples[..1]).contains("sampling…"));
    }
}
