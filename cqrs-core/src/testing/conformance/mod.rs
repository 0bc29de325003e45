//! The store conformance suite: one definition of a correct store, run by every store.
//!
//! **Who it is for:** authors of stores. If you use a store, its crate already runs this.
//!
//! # Adopting it
//!
//! A store adopts the suite in one line, in an integration test. The argument is a factory
//! that returns a fresh, empty store for each case:
//!
//! ```
//! use cqrs_core::InMemoryEventStore;
//!
//! // In `tests/conformance.rs`:
//! cqrs_core::conformance_suite!(async || InMemoryEventStore::new());
//! # fn main() {}
//! ```
//!
//! That expands to one `#[test]` per case, in one module per group (`events::exact_expectation`,
//! `schedule::claims_come_earliest_due_first`, ...), each on its own multi-threaded tokio runtime
//! (the store crate needs no tokio dependency for it). A case that has not finished after
//! [`case_timeout`] (60 s, or `CQRS_CONFORMANCE_TIMEOUT` seconds) fails with its name instead of
//! hanging the run.
//!
//! # Groups: adopt what you implement
//!
//! The suite is grouped by the trait a case checks, and each case takes the store as the trait
//! object its group needs, so a store that implements only some traits runs those groups:
//!
//! | Group | Needs | Checks |
//! |---|---|---|
//! | `events` | [`EventStore`] | append and read round trips of every field, microsecond timestamps, expected versions, atomic batches, global order and paging, filtered reads, subscriptions (catch-up, live, filtered), 16 writers on one stream, writers on many streams under a live subscriber that sees every event once in order, a proptest model check (`PROPTEST_CASES`, 32 by default) |
//! | `snapshots` | [`SnapshotStore`](crate::SnapshotStore) | the newest snapshot per stream and schema version |
//! | `checkpoints` | [`CheckpointStore`](crate::CheckpointStore) | save, overwrite, delete |
//! | `message_log` | [`EventsAndLog`] | command records, duplicate command ids, log queries and paging, no torn reads under concurrent commits |
//! | `schedule` | [`ScheduleStore`] | due times, claims earliest first, leases, attempts, re-scheduling an id changes nothing, dead letters parked out of reach of claims until retried or completed |
//! | `processes` | [`ProcessesAndSchedule`] | state, outbox, cancellations and handled command in one commit, conflicts with both versions, listing, concurrent claims and saves |
//! | `repository` | [`Storage`](crate::Storage) | a [`Repository`](crate::Repository) over the store: idempotent commands, loads through snapshots, upcasters that read the stored metadata; a [`Decider`](crate::Decider): a rule across streams recorded and idempotent by command id, and kept by deciders racing on one member and on one book |
//! | `dcb` | [`DcbStore`](crate::DcbStore) | tags on every read, reads by query (types, tags, items, everything, from a position, paged), append conditions at their edges, commits atomic across streams (a command recorded on its target with no events), deciders racing on one tag serialized over `CQRS_DCB_ROUNDS` increments (3,000 by default), deciders on disjoint tags never refused, live subscribers seeing conditional commits once in order, a proptest model check |
//!
//! [`catalogue`] lists every case with its group; [`cases`] holds each as a public async
//! function, for a store that wants to run one its own way. Cases are listed once, in the macro
//! that generates both the tests and the catalogue, and a unit test fails if a case function is
//! missing from it.
//!
//! # Example: a third-party store with events only
//!
//! The smallest useful store: events in a `Vec`, subscriptions from the shared helper. It
//! implements [`EventStore`] and nothing else, and passes the `events` group.
//! [`conformance_run!`](crate::conformance_run) runs the group here, in a doctest; in a store crate, write
//! `conformance_suite!(groups(events) async || TinyStore::default());` in `tests/` instead.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use cqrs_core::store::{CommitNotifier, SubscriptionOptions, subscription, truncate_to_micros};
//! use cqrs_core::{
//!     Appended, BatchStream, Commit, EventFilter, EventReader, EventStore, Position,
//!     RecordedEvent, StoreError, StreamId, Version,
//! };
//!
//! #[derive(Clone, Default)]
//! struct TinyStore {
//!     log: Arc<Mutex<Vec<RecordedEvent>>>,
//!     notifier: CommitNotifier,
//! }
//!
//! #[cqrs_core::async_trait]
//! impl EventReader for TinyStore {
//!     async fn read_stream(&self, stream: &StreamId, from: Version) -> Result<Vec<RecordedEvent>, StoreError> {
//!         let log = self.log.lock().unwrap();
//!         Ok(log.iter().filter(|e| &e.stream == stream && e.version >= from).cloned().collect())
//!     }
//!
//!     async fn read_all(&self, from: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
//!         let log = self.log.lock().unwrap();
//!         let skip = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
//!         Ok(log.iter().skip(skip).take(limit).cloned().collect())
//!     }
//!
//!     async fn head(&self) -> Result<Position, StoreError> {
//!         Ok(Position::new(self.log.lock().unwrap().len() as u64))
//!     }
//!
//!     fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream {
//!         let options = SubscriptionOptions::default();
//!         subscription(Arc::new(self.clone()), &self.notifier, from, filter, options)
//!     }
//! }
//!
//! #[cqrs_core::async_trait]
//! impl EventStore for TinyStore {
//!     async fn commit(&self, commit: Commit) -> Result<Appended, StoreError> {
//!         commit.validate()?;
//!         if commit.command.is_some() {
//!             // Dropping it silently would lose the record: say so instead.
//!             return Err(StoreError::Invalid("this store keeps no message log".into()));
//!         }
//!         let mut log = self.log.lock().unwrap();
//!         let actual = Version::new(log.iter().filter(|e| e.stream == commit.stream).count() as u64);
//!         if !commit.expected.matches(actual) {
//!             let (stream, expected) = (commit.stream, commit.expected);
//!             return Err(StoreError::Conflict { stream, expected, actual });
//!         }
//!         let (mut version, mut position) = (actual, None);
//!         for mut event in commit.events {
//!             // Every store keeps times to the microsecond, cut.
//!             event.metadata.recorded_at = truncate_to_micros(event.metadata.recorded_at);
//!             version = version.next();
//!             let at = Position::new(log.len() as u64 + 1);
//!             position = Some(at);
//!             log.push(RecordedEvent::from_new(event, commit.stream.clone(), version, at));
//!         }
//!         drop(log);
//!         if position.is_some() {
//!             self.notifier.notify();
//!         }
//!         Ok(Appended { version, position })
//!     }
//! }
//!
//! cqrs_core::conformance_run!(groups(events) async || TinyStore::default());
//! ```
//!
//! # What the suite does not check
//!
//! Durability across a crash, behaviour under disk-full or connection loss, and anything
//! across processes: each store tests those on its own, as they need the store's machinery.

pub mod cases;
mod fixtures;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::store::{EventStore, MessageLog, ProcessStore, ScheduleStore};

/// What the `message_log` group needs: events, and the command records committed with them.
///
/// Implemented for every type that implements both.
pub trait EventsAndLog: EventStore + MessageLog {}

impl<T: EventStore + MessageLog + ?Sized> EventsAndLog for T {}

/// What the `processes` group needs: process state, the schedule its outbox goes to, and the
/// log its handled commands go to.
///
/// Implemented for every type that implements all three.
pub trait ProcessesAndSchedule: ProcessStore + ScheduleStore + MessageLog {}

impl<T: ProcessStore + ScheduleStore + MessageLog + ?Sized> ProcessesAndSchedule for T {}

/// One case of the suite, as [`catalogue`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// The group, which is also the module of [`cases`] that holds the case.
    pub group: &'static str,
    /// The case, a function in that module.
    pub name: &'static str,
    /// The store trait (or [`EventsAndLog`], [`ProcessesAndSchedule`], `Storage`) the case
    /// takes.
    pub needs: &'static str,
}

/// Every case of the suite, group by group: what [`conformance_suite!`](crate::conformance_suite) runs.
///
/// ```
/// use cqrs_core::testing::conformance::catalogue;
///
/// let cases = catalogue();
/// assert!(cases.iter().any(|c| c.group == "events" && c.needs == "EventStore"));
/// assert!(cases.iter().any(|c| c.name == "claims_come_earliest_due_first"));
/// ```
#[must_use]
pub fn catalogue() -> Vec<Case> {
    let mut all = Vec::with_capacity(64);
    crate::__conformance_all_groups! { catalogue all }
    all
}

/// How long one case may run before it fails as hung: `CQRS_CONFORMANCE_TIMEOUT` seconds, or
/// 60. The whole suite takes a few seconds on the stores of this workspace; a store that
/// ignores a lease or reports a stale `head()` would otherwise wait for ever.
///
/// # Panics
///
/// Panics if `CQRS_CONFORMANCE_TIMEOUT` is set but is not a whole number of seconds.
#[must_use]
pub fn case_timeout() -> Duration {
    match std::env::var("CQRS_CONFORMANCE_TIMEOUT") {
        Ok(secs) => Duration::from_secs(secs.trim().parse().unwrap_or_else(|_| {
            panic!("CQRS_CONFORMANCE_TIMEOUT must be a whole number of seconds, not {secs:?}")
        })),
        Err(_) => Duration::from_secs(60),
    }
}

/// Runs the case `name` on a fresh store from `factory`, on a new multi-threaded runtime,
/// failing after [`case_timeout`].
///
/// # Panics
///
/// Panics (failing the test) if the runtime cannot start, or the case fails or does not finish
/// in time; the message names the case.
pub fn run<F, S, C, Fut>(name: &str, factory: F, case: C)
where
    F: AsyncFnOnce() -> S,
    S: Send + Sync + 'static,
    C: FnOnce(Arc<S>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_within(
        name,
        case_timeout(),
        async move || Some(factory().await),
        case,
    );
}

/// Runs the case `name` on a fresh store from `factory`, or skips it when the factory has no
/// store to give (a server that is not installed, say; the factory says why).
///
/// # Panics
///
/// As [`run`].
pub fn run_optional<F, S, C, Fut>(name: &str, factory: F, case: C)
where
    F: AsyncFnOnce() -> Option<S>,
    S: Send + Sync + 'static,
    C: FnOnce(Arc<S>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_within(name, case_timeout(), factory, case);
}

/// [`run_optional`] with an explicit time limit for the case (the store's creation does not
/// count).
///
/// The case runs as a task of its own, so even a store that blocks a runtime thread cannot
/// keep the limit from firing; on timeout the runtime is abandoned, not awaited.
///
/// # Panics
///
/// As [`run`].
///
/// # Examples
///
/// A case that never ends fails with its name:
///
/// ```should_panic
/// use std::time::Duration;
/// use cqrs_core::InMemoryEventStore;
/// use cqrs_core::testing::conformance::run_within;
///
/// run_within(
///     "events::waits_for_ever",
///     Duration::from_millis(100),
///     async || Some(InMemoryEventStore::new()),
///     |_store| std::future::pending::<()>(),
/// );
/// ```
pub fn run_within<F, S, C, Fut>(name: &str, limit: Duration, factory: F, case: C)
where
    F: AsyncFnOnce() -> Option<S>,
    S: Send + Sync + 'static,
    C: FnOnce(Arc<S>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let Some(store) = runtime.block_on(factory()) else {
        return;
    };
    // The limit is kept by this thread, not by a tokio timer: a case spinning on a store that
    // never yields can occupy every worker, and then no timer fires.
    let (done, outcome) = std::sync::mpsc::sync_channel(1);
    let case = std::panic::AssertUnwindSafe(case(Arc::new(store)));
    runtime.spawn(async move {
        let _ = done.send(futures::FutureExt::catch_unwind(case).await);
    });
    match outcome.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(payload)) => {
            panic!(
                "conformance case `{name}` failed: {}",
                panic_message(payload.as_ref())
            );
        }
        Err(_) => {
            // A hung case may hold runtime threads for ever: leave them behind.
            runtime.shutdown_background();
            panic!(
                "conformance case `{name}` did not finish within {limit:?}: it waits for \
                 something the store never does (a lease it ignores, a head() that stays \
                 behind, a notification it never sends); CQRS_CONFORMANCE_TIMEOUT sets the limit"
            );
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs conformance cases against the store that a factory makes, one `#[test]` each, in one
/// module per group.
///
/// The factory is an async closure (or a closure returning a future) that returns a fresh,
/// empty store. Without a group list it runs every group, which needs the whole of
/// [`Storage`](crate::Storage); with `groups(..)` first it runs those groups only, each needing
/// only its traits (see [`cases`]). With `optional` before the factory, the factory returns an
/// `Option`, and `None` skips the case (for stores that need a server that may be missing).
///
/// The groups are `events`, `dcb`, `snapshots`, `checkpoints`, `message_log`, `schedule`,
/// `processes` and `repository`. See [the suite](crate::testing::conformance).
#[macro_export]
macro_rules! conformance_suite {
    (groups($($group:ident),+ $(,)?) optional $factory:expr) => {
        $( $crate::__conformance_group! { $group tests run_optional $factory } )+
    };
    (groups($($group:ident),+ $(,)?) $factory:expr) => {
        $( $crate::__conformance_group! { $group tests run $factory } )+
    };
    (optional $factory:expr) => {
        $crate::__conformance_all_groups! { tests run_optional $factory }
    };
    ($factory:expr) => {
        $crate::__conformance_all_groups! { tests run $factory }
    };
}

/// Runs conformance cases now, one after another, against the store that a factory makes:
/// the statement form of [`conformance_suite!`](crate::conformance_suite), with the same arguments, for a doctest or a
/// single test. It panics at the first case that fails, naming it.
///
/// See [the suite](crate::testing::conformance) for an example.
#[macro_export]
macro_rules! conformance_run {
    (groups($($group:ident),+ $(,)?) optional $factory:expr) => {
        $( $crate::__conformance_group! { $group now run_optional $factory } )+
    };
    (groups($($group:ident),+ $(,)?) $factory:expr) => {
        $( $crate::__conformance_group! { $group now run $factory } )+
    };
    (optional $factory:expr) => {
        $crate::__conformance_all_groups! { now run_optional $factory }
    };
    ($factory:expr) => {
        $crate::__conformance_all_groups! { now run $factory }
    };
}

/// Every group's name: the one place the list of groups is written.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_all_groups {
    ($($then:tt)*) => {
        $crate::__conformance_group! { events $($then)* }
        $crate::__conformance_group! { dcb $($then)* }
        $crate::__conformance_group! { snapshots $($then)* }
        $crate::__conformance_group! { checkpoints $($then)* }
        $crate::__conformance_group! { message_log $($then)* }
        $crate::__conformance_group! { schedule $($then)* }
        $crate::__conformance_group! { processes $($then)* }
        $crate::__conformance_group! { repository $($then)* }
    };
}

/// Each group's cases and the trait they take: the one place the list of cases is written. A
/// unit test checks that every public case function of [`cases`] is listed here.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_group {
    (events $($then:tt)*) => {
        $crate::__conformance_emit! { events EventStore [
            append_and_read_back_round_trips_every_field,
            read_stream_of_missing_stream_is_empty,
            head_reaches_the_last_committed_position,
            read_stream_from_version,
            streams_are_listed_and_read_a_page_at_a_time,
            no_stream_expectation,
            exact_expectation,
            any_expectation_always_appends,
            conflicting_batch_writes_nothing,
            commits_in_order_keep_their_order,
            empty_append_checks_the_expectation,
            invalid_commits_are_rejected,
            large_batches_and_payloads_round_trip,
            timestamps_keep_microseconds,
            read_then_commit_decides_on_the_stream,
            visit_stream_reads_what_read_stream_reads,
            read_all_pages_in_global_order,
            read_all_pages_see_commits_between_them,
            read_filtered_selects_types_and_categories,
            subscription_catches_up_then_follows_live,
            subscription_from_a_position_with_a_filter,
            concurrent_writers_on_one_stream,
            live_subscriber_sees_every_event_once_in_order,
            model_check,
        ] $($then)* }
    };
    (snapshots $($then:tt)*) => {
        $crate::__conformance_emit! { snapshots SnapshotStore [
            snapshots_keep_the_newest,
        ] $($then)* }
    };
    (checkpoints $($then:tt)*) => {
        $crate::__conformance_emit! { checkpoints CheckpointStore [
            checkpoints_round_trip,
        ] $($then)* }
    };
    (message_log $($then:tt)*) => {
        $crate::__conformance_emit! { message_log EventsAndLog [
            command_records_round_trip,
            duplicate_command_id_writes_nothing,
            message_log_queries_combine_criteria,
            message_log_pages_in_log_order,
            log_queries_never_tear_a_command_from_its_events,
        ] $($then)* }
    };
    (schedule $($then:tt)*) => {
        $crate::__conformance_emit! { schedule ScheduleStore [
            scheduled_commands_fire_when_due_and_once_claimed,
            claims_come_earliest_due_first,
            scheduling_an_id_again_changes_nothing,
            parked_commands_wait_for_retry_or_discard,
        ] $($then)* }
    };
    (processes $($then:tt)*) => {
        $crate::__conformance_emit! { processes ProcessesAndSchedule [
            process_state_and_outbox_commit_together,
            process_conflicts_report_both_versions,
            process_saves_cancel_scheduled_commands,
            processes_and_schedules_can_be_listed,
            concurrent_claims_and_process_saves_do_not_overlap,
        ] $($then)* }
    };
    (dcb $($then:tt)*) => {
        $crate::__conformance_emit! { dcb DcbStore [
            tags_round_trip_and_queries_select_by_type_and_tag,
            conditions_hold_and_fail_at_their_edges,
            conditional_commits_span_streams_atomically,
            racing_deciders_on_one_tag_are_serialized,
            deciders_on_disjoint_tags_never_conflict,
            subscribers_see_conditional_commits_once_in_order,
            dcb_model_check,
        ] $($then)* }
    };
    (repository $($then:tt)*) => {
        $crate::__conformance_emit! { repository Storage [
            repository_commands_are_idempotent,
            repository_loads_through_snapshots,
            repository_upcasters_read_the_stored_metadata,
            decisions_are_recorded_and_idempotent,
            racing_decisions_keep_a_rule_across_streams,
            decisions_reading_their_target_keep_its_version,
        ] $($then)* }
    };
    ($other:ident $($then:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "no conformance group `", ::core::stringify!($other), "`; the groups are events, ",
            "dcb, snapshots, checkpoints, message_log, schedule, processes and repository"
        ));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_emit {
    ($group:ident $needs:ident [$($case:ident),* $(,)?] tests $runner:ident $factory:expr) => {
        mod $group {
            #[allow(unused_imports, reason = "the factory may name items of the enclosing module")]
            use super::*;
            $(
                #[test]
                fn $case() {
                    $crate::testing::conformance::$runner(
                        ::core::concat!(::core::stringify!($group), "::", ::core::stringify!($case)),
                        $factory,
                        |store| $crate::testing::conformance::cases::$group::$case(store),
                    );
                }
            )*
        }
    };
    ($group:ident $needs:ident [$($case:ident),* $(,)?] now $runner:ident $factory:expr) => {
        $(
            $crate::testing::conformance::$runner(
                ::core::concat!(::core::stringify!($group), "::", ::core::stringify!($case)),
                $factory,
                |store| $crate::testing::conformance::cases::$group::$case(store),
            );
        )*
    };
    ($group:ident $needs:ident [$($case:ident),* $(,)?] catalogue $out:ident) => {
        $(
            $out.push($crate::testing::conformance::Case {
                group: ::core::stringify!($group),
                name: ::core::stringify!($case),
                needs: ::core::stringify!($needs),
            });
        )*
    };
}

#[cfg(test)]
mod tests {
    use crate::InMemoryEventStore;

    crate::conformance_suite!(async || InMemoryEventStore::new());

    /// Every public case function is in the catalogue, so none is written and never run.
    #[test]
    fn the_catalogue_lists_every_case() {
        let sources = [
            ("checkpoints", include_str!("cases/checkpoints.rs")),
            ("dcb", include_str!("cases/dcb.rs")),
            ("events", include_str!("cases/events/mod.rs")),
            ("events", include_str!("cases/events/model.rs")),
            ("events", include_str!("cases/events/stress.rs")),
            ("events", include_str!("cases/events/subscriptions.rs")),
            ("message_log", include_str!("cases/message_log.rs")),
            ("processes", include_str!("cases/processes.rs")),
            ("repository", include_str!("cases/repository.rs")),
            ("schedule", include_str!("cases/schedule.rs")),
            ("snapshots", include_str!("cases/snapshots.rs")),
        ];
        let mut defined: Vec<(&str, &str)> = sources
            .iter()
            .flat_map(|(group, source)| {
                source.lines().filter_map(move |line| {
                    let rest = line.strip_prefix("pub async fn ")?;
                    Some((*group, &rest[..rest.find(['(', '<'])?]))
                })
            })
            .collect();
        let mut listed: Vec<(&str, &str)> = super::catalogue()
            .iter()
            .map(|case| (case.group, case.name))
            .collect();
        defined.sort_unstable();
        listed.sort_unstable();
        assert_eq!(
            defined, listed,
            "cases defined vs cases in __conformance_group!"
        );
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testing/conformance/cases");
        let files = walk(&dir);
        assert_eq!(
            files,
            sources.len(),
            "a case file under {dir:?} is missing from this test"
        );
    }

    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .expect("the cases directory")
            .map(|entry| {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    walk(&path)
                } else {
                    usize::from(
                        path.file_name().is_some_and(|n| n != "mod.rs")
                            || path.ends_with("events/mod.rs"),
                    )
                }
            })
            .sum()
    }
}
