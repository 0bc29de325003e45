//! The store conformance suite: one definition of a correct store, run by every store.
//!
//! **Who it is for:** authors of stores. If you use a store, its crate already runs this.
//!
//! A store adopts the whole suite in one line, in an integration test. The argument is a
//! factory that returns a fresh, empty store for each case:
//!
//! ```
//! use cqrs_core::InMemoryEventStore;
//!
//! // In `tests/conformance.rs`:
//! cqrs_core::conformance_suite!(async || InMemoryEventStore::new());
//! # fn main() {}
//! ```
//!
//! That expands to one `#[test]` per case, each on its own multi-threaded tokio runtime (the
//! store crate needs no tokio dependency for it). Each case is also a public async function in
//! [`cases`], taking an `Arc<dyn Storage>`, for stores that want to run some cases their own
//! way.
//!
//! The cases cover: append and read round trips of every field; expected-version semantics;
//! atomic batches; global order and paging; filtered reads; subscriptions (catch-up, live,
//! filtered); snapshots; checkpoints; command records, duplicate command ids and message-log
//! queries; idempotent command handling through a [`Repository`](crate::Repository);
//! scheduled commands and leases; process state with its outbox; stress cases (16 concurrent
//! writers on one stream; concurrent writers on many streams under a live subscriber that must
//! see every event once, in order; concurrent claims of scheduled commands and concurrent
//! process saves); and a proptest model check of random appends and reads
//! against a plain model (`PROPTEST_CASES` sets the number of cases, 32 by default).
//!
//! # What the suite does not check
//!
//! Durability across a crash, behaviour under disk-full or connection loss, and anything
//! across processes: each store tests those on its own, as they need the store's machinery.

pub mod cases;
mod fixtures;

use std::future::Future;
use std::sync::Arc;

use crate::store::Storage;

/// Runs one case on a fresh store from `factory`, on a new multi-threaded runtime.
///
/// # Panics
///
/// Panics (failing the test) if the runtime cannot start or the case fails.
pub fn run<F, S, C, Fut>(factory: F, case: C)
where
    F: AsyncFnOnce() -> S,
    S: Storage,
    C: FnOnce(Arc<dyn Storage>) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(async move {
        let store: Arc<dyn Storage> = Arc::new(factory().await);
        case(store).await;
    });
}

/// Runs one case on a fresh store from `factory`, or skips it when the factory has no store to
/// give (a server that is not installed, say; the factory says why).
///
/// # Panics
///
/// As [`run`].
pub fn run_optional<F, S, C, Fut>(factory: F, case: C)
where
    F: AsyncFnOnce() -> Option<S>,
    S: Storage,
    C: FnOnce(Arc<dyn Storage>) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(async move {
        if let Some(store) = factory().await {
            case(Arc::new(store)).await;
        }
    });
}

/// Runs every conformance case against the store that `$factory` makes, one `#[test]` each.
///
/// `$factory` is an async closure (or a closure returning a future) that returns a fresh,
/// empty store implementing [`Storage`](crate::Storage). With `optional` first, it returns an
/// `Option`, and `None` skips the case (for stores that need a server that may be missing).
/// See [the suite](crate::testing::conformance).
#[macro_export]
macro_rules! conformance_suite {
    (optional $factory:expr) => {
        $crate::__conformance_list! { run_optional $factory }
    };
    ($factory:expr) => {
        $crate::__conformance_list! { run $factory }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_list {
    ($runner:ident $factory:expr) => {
        $crate::__conformance_cases! { $runner $factory;
            append_and_read_back_round_trips_every_field,
            read_stream_of_missing_stream_is_empty,
            head_reaches_the_last_committed_position,
            read_stream_from_version,
            no_stream_expectation,
            exact_expectation,
            any_expectation_always_appends,
            conflicting_batch_writes_nothing,
            commits_in_order_keep_their_order,
            empty_append_checks_the_expectation,
            invalid_commits_are_rejected,
            large_batches_and_payloads_round_trip,
            read_then_commit_decides_on_the_stream,
            visit_stream_reads_what_read_stream_reads,
            read_all_pages_in_global_order,
            read_filtered_selects_types_and_categories,
            subscription_catches_up_then_follows_live,
            subscription_from_a_position_with_a_filter,
            snapshots_keep_the_newest,
            checkpoints_round_trip,
            command_records_round_trip,
            duplicate_command_id_writes_nothing,
            message_log_queries_combine_criteria,
            message_log_pages_in_log_order,
            repository_commands_are_idempotent,
            repository_loads_through_snapshots,
            scheduled_commands_fire_when_due_and_once_claimed,
            process_state_and_outbox_commit_together,
            processes_and_schedules_can_be_listed,
            concurrent_writers_on_one_stream,
            concurrent_claims_and_process_saves_do_not_overlap,
            live_subscriber_sees_every_event_once_in_order,
            model_check,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($runner:ident $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::conformance::$runner($factory, $crate::testing::conformance::cases::$case);
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use crate::InMemoryEventStore;

    crate::conformance_suite!(async || InMemoryEventStore::new());
}
