//! The metrics the framework records, through the [`metrics`] facade: install any recorder
//! (Prometheus, OpenTelemetry, StatsD…) and they are collected; without one they cost an atomic
//! load each. Names follow Prometheus' conventions: a unit suffix, `_total` on counters.
//!
//! | Name | Kind | Unit | Labels | What |
//! |---|---|---|---|---|
//! | `cqrs_commands_total` | counter | commands | `handler`, `command`, `outcome` | commands handled by a repository (`handler` = the aggregate type) or a decider (the decision's name); `outcome` is `accepted`, `rejected`, `replayed` (a command id seen before), `conflict` (every attempt met a concurrent write) or `failed` |
//! | `cqrs_command_duration_seconds` | histogram | seconds | `handler`, `command` | from the call to its answer, retries included |
//! | `cqrs_command_conflicts_total` | counter | attempts | `handler` | attempts that met a concurrent write (each is retried, up to the handler's limit) |
//! | `cqrs_store_duration_seconds` | histogram | seconds | `operation` | the store calls a command or a load waits for: `commit` (read-then-commit of a command), `load_snapshot`, `load` (a repository's load), `query` and `decide_commit` (a decider's) |
//! | `cqrs_group_commit_size` | histogram | writes | `store` | writes committed in one transaction by a store that groups them (`sqlite`, `postgres`) |
//! | `cqrs_projection_position` | gauge | position | `projection` | the last position a projection (a read model, or a process manager's runner) applied |
//! | `cqrs_projection_lag_events` | gauge | events | `projection` | how far the head of the log is ahead of it (0 once it has caught up; the head is read at most once a second) |
//! | `cqrs_projection_lag_seconds` | gauge | seconds | `projection` | how old the last event it applied was, by the system clock (0 once it has caught up) |
//! | `cqrs_projection_events_total` | counter | events | `projection` | events applied |
//! | `cqrs_projection_errors_total` | counter | errors | `projection` | failed batches (each retried after a back-off) |
//! | `cqrs_process_events_total` | counter | events | `process`, `outcome` | events a process manager's instance took: `handled`, `skipped` (it can never take it: logged), `failed` (retried) |
//! | `cqrs_dispatch_deliveries_total` | counter | commands | `command`, `outcome` | scheduled commands (a process manager's, timeouts) delivered: `delivered`, `retry` (failed, tried again after its lease), `dead_letter` (given up after its last attempt: parked, or recorded as rejected where the store keeps no dead letters) |
//! | `cqrs_dispatch_lateness_seconds` | histogram | seconds | — | how long after its due time a command was delivered |
//! | `cqrs_dispatch_due` | gauge | commands | — | due commands a dispatcher holds now (a full batch means more wait) |
//! | `cqrs_dispatch_parked` | gauge | commands | — | dead letters: commands parked in the store after their last attempt failed, waiting for an operator to retry or discard them (a running dispatcher counts them at most every 10 s, and up to 100,000) |
//! | `cqrs_subscription_wake_seconds` | histogram | seconds | — | from an event's commit (`recorded_at`) to a live subscriber reading it |
//!
//! A process manager's pending work is its runner's lag (`cqrs_projection_lag_events` with its
//! key) and the commands it sent not yet delivered (`cqrs_dispatch_due`).
//!
//! # Examples
//!
//! ```
//! // After installing a recorder, describe the metrics so that exporters show units and help.
//! cqrs_core::metric::describe();
//! assert!(cqrs_core::metric::ALL.contains(&cqrs_core::metric::COMMANDS));
//! ```

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Commands handled, by handler, command type and outcome.
pub const COMMANDS: &str = "cqrs_commands_total";
/// How long a command took, by handler and command type.
pub const COMMAND_DURATION: &str = "cqrs_command_duration_seconds";
/// Attempts that met a concurrent write, by handler.
pub const COMMAND_CONFLICTS: &str = "cqrs_command_conflicts_total";
/// How long store calls took, by operation.
pub const STORE_DURATION: &str = "cqrs_store_duration_seconds";
/// Writes per group commit, by store.
pub const GROUP_COMMIT_SIZE: &str = "cqrs_group_commit_size";
/// A projection's position.
pub const PROJECTION_POSITION: &str = "cqrs_projection_position";
/// How many events a projection is behind the head.
pub const PROJECTION_LAG_EVENTS: &str = "cqrs_projection_lag_events";
/// How old the last event a projection applied is.
pub const PROJECTION_LAG_SECONDS: &str = "cqrs_projection_lag_seconds";
/// Events a projection applied.
pub const PROJECTION_EVENTS: &str = "cqrs_projection_events_total";
/// A projection's failed batches.
pub const PROJECTION_ERRORS: &str = "cqrs_projection_errors_total";
/// Events process managers took, by process and outcome.
pub const PROCESS_EVENTS: &str = "cqrs_process_events_total";
/// Scheduled commands delivered, by command type and outcome.
pub const DISPATCH_DELIVERIES: &str = "cqrs_dispatch_deliveries_total";
/// How late scheduled commands were delivered.
pub const DISPATCH_LATENESS: &str = "cqrs_dispatch_lateness_seconds";
/// Due commands a dispatcher holds.
pub const DISPATCH_DUE: &str = "cqrs_dispatch_due";
/// Commands parked as dead letters.
pub const DISPATCH_PARKED: &str = "cqrs_dispatch_parked";
/// From commit to a live subscriber.
pub const SUBSCRIPTION_WAKE: &str = "cqrs_subscription_wake_seconds";

/// Every metric name above.
pub const ALL: [&str; 16] = [
    COMMANDS,
    COMMAND_DURATION,
    COMMAND_CONFLICTS,
    STORE_DURATION,
    GROUP_COMMIT_SIZE,
    PROJECTION_POSITION,
    PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS,
    PROJECTION_EVENTS,
    PROJECTION_ERRORS,
    PROCESS_EVENTS,
    DISPATCH_DELIVERIES,
    DISPATCH_LATENESS,
    DISPATCH_DUE,
    DISPATCH_PARKED,
    SUBSCRIPTION_WAKE,
];

/// Describes every metric (unit and help text) to the installed recorder: call it once after
/// installing one.
pub fn describe() {
    describe_counter!(
        COMMANDS,
        Unit::Count,
        "Commands handled, by handler (aggregate type or decision), command type and outcome"
    );
    describe_histogram!(
        COMMAND_DURATION,
        Unit::Seconds,
        "From a command's call to its answer, retries included"
    );
    describe_counter!(
        COMMAND_CONFLICTS,
        Unit::Count,
        "Command attempts that met a concurrent write"
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Store calls by operation (commit, load_snapshot, load, query, decide_commit)"
    );
    describe_histogram!(
        GROUP_COMMIT_SIZE,
        Unit::Count,
        "Writes committed in one transaction, by store"
    );
    describe_gauge!(
        PROJECTION_POSITION,
        Unit::Count,
        "The last log position a projection applied"
    );
    describe_gauge!(
        PROJECTION_LAG_EVENTS,
        Unit::Count,
        "How far the log's head is ahead of a projection"
    );
    describe_gauge!(
        PROJECTION_LAG_SECONDS,
        Unit::Seconds,
        "How old the last event a projection applied is (0 once caught up)"
    );
    describe_counter!(
        PROJECTION_EVENTS,
        Unit::Count,
        "Events a projection applied"
    );
    describe_counter!(
        PROJECTION_ERRORS,
        Unit::Count,
        "A projection's failed batches"
    );
    describe_counter!(
        PROCESS_EVENTS,
        Unit::Count,
        "Events process manager instances took, by outcome"
    );
    describe_counter!(
        DISPATCH_DELIVERIES,
        Unit::Count,
        "Scheduled commands delivered, by command type and outcome"
    );
    describe_histogram!(
        DISPATCH_LATENESS,
        Unit::Seconds,
        "How long after its due time a scheduled command was delivered"
    );
    describe_gauge!(
        DISPATCH_DUE,
        Unit::Count,
        "Due commands a dispatcher holds now"
    );
    describe_gauge!(
        DISPATCH_PARKED,
        Unit::Count,
        "Commands parked as dead letters after their last attempt failed"
    );
    describe_histogram!(
        SUBSCRIPTION_WAKE,
        Unit::Seconds,
        "From an event's commit to a live subscriber reading it"
    );
}

pub(crate) fn command(
    handler: &'static str,
    command: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    counter!(COMMANDS, "handler" => handler, "command" => command, "outcome" => outcome)
        .increment(1);
    histogram!(COMMAND_DURATION, "handler" => handler, "command" => command)
        .record(elapsed.as_secs_f64());
}

pub(crate) fn conflict(handler: &'static str) {
    counter!(COMMAND_CONFLICTS, "handler" => handler).increment(1);
}

pub(crate) fn store_call(operation: &'static str, elapsed: Duration) {
    histogram!(STORE_DURATION, "operation" => operation).record(elapsed.as_secs_f64());
}

/// A batch a projection applied, and how far behind it still is.
pub(crate) fn projection_applied(
    projection: &str,
    events: usize,
    position: u64,
    lag_events: u64,
    lag_seconds: Option<f64>,
) {
    let projection = projection.to_owned();
    counter!(PROJECTION_EVENTS, "projection" => projection.clone()).increment(events as u64);
    #[expect(
        clippy::cast_precision_loss,
        reason = "a gauge is a float: positions past 2^53 lose their last digits"
    )]
    {
        gauge!(PROJECTION_POSITION, "projection" => projection.clone()).set(position as f64);
        gauge!(PROJECTION_LAG_EVENTS, "projection" => projection.clone()).set(lag_events as f64);
    }
    if let Some(seconds) = lag_seconds {
        gauge!(PROJECTION_LAG_SECONDS, "projection" => projection).set(seconds);
    }
}

pub(crate) fn projection_failed(projection: &str) {
    counter!(PROJECTION_ERRORS, "projection" => projection.to_owned()).increment(1);
}

pub(crate) fn process_event(process: &'static str, outcome: &'static str) {
    counter!(PROCESS_EVENTS, "process" => process, "outcome" => outcome).increment(1);
}

pub(crate) fn delivery(command: &str, outcome: &'static str) {
    counter!(DISPATCH_DELIVERIES, "command" => command.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub(crate) fn lateness(seconds: f64) {
    histogram!(DISPATCH_LATENESS).record(seconds.max(0.0));
}

pub(crate) fn due(commands: usize) {
    #[expect(
        clippy::cast_precision_loss,
        reason = "a batch of commands is far below 2^53"
    )]
    gauge!(DISPATCH_DUE).set(commands as f64);
}

pub(crate) fn parked(commands: usize) {
    #[expect(
        clippy::cast_precision_loss,
        reason = "the count is capped far below 2^53"
    )]
    gauge!(DISPATCH_PARKED).set(commands as f64);
}

pub(crate) fn woke(seconds: f64) {
    histogram!(SUBSCRIPTION_WAKE).record(seconds.max(0.0));
}

/// Seconds from `then` to now, by the system clock (negative when clocks disagree).
pub(crate) fn seconds_since(then: chrono::DateTime<chrono::Utc>) -> f64 {
    seconds_between(then, chrono::Utc::now())
}

/// Seconds from `from` to `to`.
pub(crate) fn seconds_between(
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "microseconds of lag stay far below 2^53"
    )]
    let micros = (to - from).num_microseconds().unwrap_or(i64::MAX) as f64;
    micros / 1e6
}
