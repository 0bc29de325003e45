//! `log`: the message log, filtered.

use std::io::Write;

use chrono::{DateTime, Utc};
use cqrs_core::{LogQuery, LoggedMessage, MessageKind, StreamId};
use uuid::Uuid;

use crate::app::ConferenceApp;

/// What to show of the message log (criteria combine: any value of one, all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only commands or only events.
    pub kind: Option<MessageKind>,
    /// Type names.
    pub types: Vec<String>,
    /// Streams (an event's stream, a command's target).
    pub streams: Vec<StreamId>,
    /// Correlation ids (one flow each).
    pub correlations: Vec<Uuid>,
    /// From this time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many entries.
    pub limit: usize,
}

/// Writes the entries of the log that `options` select, one a line, in log order.
///
/// # Errors
///
/// The store's error, or `out`'s.
pub async fn print_log(
    app: &ConferenceApp,
    options: LogOptions,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let mut query = LogQuery::new()
        .with_types(options.types)
        .with_streams(options.streams)
        .with_correlation_ids(options.correlations)
        .with_time_range(options.since, options.until)
        .with_limit(options.limit);
    if let Some(kind) = options.kind {
        query = query.with_kind(kind);
    }
    let entries = app.log(&query).await?;
    for entry in &entries {
        let (kind, target, correlation) = match &entry.message {
            LoggedMessage::Command(c) => ("command", c.target.to_string(), c.correlation_id),
            LoggedMessage::Event(e) => ("event  ", e.stream.to_string(), e.metadata.correlation_id),
        };
        writeln!(
            out,
            "{} {kind} {:<44} {:<50} {}",
            entry.cursor.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            entry.message_type(),
            target,
            correlation.map(|c| c.to_string()).unwrap_or_default()
        )?;
    }
    Ok(entries.len())
}
