//! The message log as a picture: one lane per stream, one row per command or event in log
//! order, an arrow from each message to what it caused (a command to its events, an event to
//! the command a process manager sent for it, a timeout to what it sent), timeouts still
//! waiting at the bottom, and beside each event which read models have applied it.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use cqrs_core::{LogEntry, LoggedMessage, Outcome, ParkedCommand, ScheduledCommand};
use maud::{Markup, PreEscaped, html};
use uuid::Uuid;

/// A read model as the picture shows it: its key and how far it has applied the log.
pub(crate) struct ReadModelMark {
    pub(crate) key: String,
    pub(crate) position: u64,
}

const LANE: i64 = 210;
const LEFT: i64 = 90;
const TOP: i64 = 64;
const ROW: i64 = 34;
const BOX_W: i64 = 190;
const BOX_H: i64 = 24;
const MARK: i64 = 16;

/// What one row shows.
struct Row {
    id: Uuid,
    caused_by: Option<Uuid>,
    lane: usize,
    label: String,
    detail: String,
    href: String,
    kind: Kind,
    at: DateTime<Utc>,
    position: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Rejected,
    Event,
    Waiting,
}

/// The picture of `entries` (in log order) and of the `waiting` commands and `dead` letters of
/// the same flows.
pub(crate) fn picture(
    entries: &[LogEntry],
    waiting: &[ScheduledCommand],
    dead: &[ParkedCommand],
    read_models: &[ReadModelMark],
    stream_link: impl Fn(&str) -> String,
) -> Markup {
    let mut lanes: Vec<String> = Vec::new();
    let mut lane_of = |stream: &str| -> usize {
        if let Some(i) = lanes.iter().position(|l| l == stream) {
            return i;
        }
        lanes.push(stream.to_owned());
        lanes.len() - 1
    };
    let mut rows: Vec<Row> = Vec::new();
    for entry in entries {
        match &entry.message {
            LoggedMessage::Command(c) => {
                let rejected = matches!(c.outcome, Outcome::Rejected { .. });
                let outcome = match &c.outcome {
                    Outcome::Accepted { events, .. } => format!("accepted, {events} events"),
                    Outcome::Rejected { message, .. } => format!("rejected: {message}"),
                    _ => "handled".to_owned(),
                };
                rows.push(Row {
                    id: c.command_id,
                    caused_by: c.causation_id,
                    lane: lane_of(c.target.as_str()),
                    label: c.command_type.clone(),
                    detail: format!(
                        "command {} → {}\n{}\nid {}",
                        c.command_type, c.target, outcome, c.command_id
                    ),
                    href: stream_link(c.target.as_str()),
                    kind: if rejected {
                        Kind::Rejected
                    } else {
                        Kind::Command
                    },
                    at: c.recorded_at,
                    position: None,
                });
            }
            LoggedMessage::Event(e) => rows.push(Row {
                id: e.metadata.event_id,
                caused_by: e.metadata.causation_id,
                lane: lane_of(e.stream.as_str()),
                label: e.event_type.clone(),
                detail: format!(
                    "event {} in {} v{}\nposition {}\nid {}",
                    e.event_type,
                    e.stream,
                    e.version.get(),
                    e.position.get(),
                    e.metadata.event_id
                ),
                href: format!("{}#v{}", stream_link(e.stream.as_str()), e.version.get()),
                kind: Kind::Event,
                at: e.metadata.recorded_at,
                position: Some(e.position.get()),
            }),
        }
    }
    for scheduled in waiting {
        let c = &scheduled.command;
        rows.push(Row {
            id: c.id,
            caused_by: c.causation_id,
            lane: lane_of(c.target.as_str()),
            label: format!("due: {}", c.command_type),
            detail: format!(
                "scheduled {} → {}\ndue {}\nattempts {}",
                c.command_type,
                c.target,
                scheduled.due_at.format("%Y-%m-%d %H:%M:%S UTC"),
                scheduled.attempts
            ),
            href: stream_link(c.target.as_str()),
            kind: Kind::Waiting,
            at: scheduled.due_at,
            position: None,
        });
    }
    for parked in dead {
        let c = &parked.scheduled.command;
        rows.push(Row {
            id: c.id,
            caused_by: c.causation_id,
            lane: lane_of(c.target.as_str()),
            label: format!("dead letter: {}", c.command_type),
            detail: format!(
                "{} → {}\nparked {} after {} attempts\n{}",
                c.command_type,
                c.target,
                parked.parked_at.format("%Y-%m-%d %H:%M:%S UTC"),
                parked.scheduled.attempts,
                parked.reason
            ),
            href: "/explorer/dead-letters".to_owned(),
            kind: Kind::Rejected,
            at: parked.parked_at,
            position: None,
        });
    }
    let start = rows.first().map_or_else(Utc::now, |r| r.at);
    let row_of: HashMap<Uuid, usize> = rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let marks_x = LEFT + to_i64(lanes.len()) * LANE + 10;
    let width = marks_x + to_i64(read_models.len()) * (MARK + 6) + 40;
    let height = TOP + to_i64(rows.len()) * ROW + 20;
    let x_of = |lane: usize| LEFT + to_i64(lane) * LANE + LANE / 2;
    let y_of = |row: usize| TOP + to_i64(row) * ROW;

    let mut arrows = String::new();
    for (i, row) in rows.iter().enumerate() {
        let Some(from) = row.caused_by.and_then(|id| row_of.get(&id)) else {
            continue;
        };
        let (x1, y1) = (x_of(rows[*from].lane), y_of(*from) + BOX_H);
        let (x2, y2) = (x_of(row.lane), y_of(i));
        let _ = write!(
            arrows,
            r#"<path class="cause" d="M{x1},{y1} C{x1},{} {x2},{} {x2},{y2}" marker-end="url(#arrow)"></path>"#,
            y1 + ROW / 2,
            y2 - ROW / 2
        );
    }
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" aria-label="The flow's messages, lane by stream, in log order" {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                    path d="M0,0 L10,5 L0,10 z" {}
                }
            }
            @for (i, lane) in lanes.iter().enumerate() {
                line.lane x1=(x_of(i)) y1="40" x2=(x_of(i)) y2=(height - 10) {}
                a href=(stream_link(lane)) {
                    text.lane x=(x_of(i)) y="22" text-anchor="middle" { (lane_label(lane)) title { (lane) } }
                }
            }
            @for j in 0..read_models.len() {
                text.model x=(marks_x + to_i64(j) * (MARK + 6) + MARK / 2) y="40" text-anchor="middle" { (j + 1) }
            }
            (PreEscaped(arrows))
            @for (i, row) in rows.iter().enumerate() {
                g.message.(kind_class(row.kind)) {
                    text.when x="8" y=(y_of(i) + 16) { "+" (elapsed(start, row.at)) }
                    a href=(row.href) {
                        rect x=(x_of(row.lane) - BOX_W / 2) y=(y_of(i)) width=(BOX_W) height=(BOX_H) rx=(if matches!(row.kind, Kind::Event) { 2 } else { 12 }) {
                            title { (row.detail) }
                        }
                        text x=(x_of(row.lane)) y=(y_of(i) + 16) text-anchor="middle" { (short(&row.label, 30)) }
                    }
                    @if let Some(position) = row.position {
                        @for (j, model) in read_models.iter().enumerate() {
                            rect.mark.applied[model.position >= position] x=(marks_x + to_i64(j) * (MARK + 6)) y=(y_of(i) + 4) width=(MARK) height=(MARK) rx="3" {
                                title { (model.key) @if model.position >= position { " has applied it" } @else { " has not applied it yet" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn kind_class(kind: Kind) -> &'static str {
    match kind {
        Kind::Command => "command",
        Kind::Rejected => "rejected",
        Kind::Event => "event",
        Kind::Waiting => "waiting",
    }
}

/// A stream's name short enough for its lane: its category and the end of its id, which is
/// where time-ordered ids differ.
fn lane_label(stream: &str) -> String {
    const MAX: usize = 26;
    if stream.chars().count() <= MAX {
        return stream.to_owned();
    }
    let (category, id) = stream.split_once('-').unwrap_or(("", stream));
    let keep = MAX.saturating_sub(category.chars().count() + 2).max(6);
    let tail: String = id
        .chars()
        .rev()
        .take(keep)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{category}-…{tail}")
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX / 4)
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Time since the flow's first message, as a person reads it.
fn elapsed(start: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let ms = (at - start).num_milliseconds();
    match ms {
        ..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", f64::from(i32::try_from(ms).unwrap_or(0)) / 1e3),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        _ => format!(
            "{:.1} h",
            f64::from(i32::try_from(ms / 60_000).unwrap_or(0)) / 60.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_person_would_say_them() {
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let at = |ms| start + chrono::Duration::milliseconds(ms);
        assert_eq!(elapsed(start, at(12)), "12 ms");
        assert_eq!(elapsed(start, at(2_500)), "2.5 s");
        assert_eq!(elapsed(start, at(16 * 60_000)), "16 min");
        assert_eq!(elapsed(start, at(90 * 60_000)), "1.5 h");
        assert_eq!(short("registration.order_placed", 10), "registrat…");
        assert_eq!(
            lane_label("order-01a2484d-f43d-771a-9980-75f24fe456a9"),
            "order-…a-9980-75f24fe456a9"
        );
        assert_eq!(lane_label("seats-1"), "seats-1");
    }
}
