//! The conformance suite catches stores with planted bugs, each with a named case and within
//! the per-case limit, instead of passing them or hanging.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use cqrs_core::testing::conformance::{cases, run_within};
use cqrs_core::{
    Appended, BatchStream, Commit, ConditionalCommit, DcbStore, EventFilter, EventQuery,
    EventReader, EventStore, ExpectedVersion, InMemoryEventStore, LogEntry, LogQuery, MessageLog,
    Position, ProcessSave, ProcessState, ProcessStore, QueryItem, RecordedEvent, ScheduleStore,
    ScheduledCommand, StoreError, StreamId, Version,
};
use uuid::Uuid;

/// Long enough for every case on a correct store, short enough to keep this test quick.
const LIMIT: Duration = Duration::from_secs(5);

/// Runs `case` on `store` under [`LIMIT`] and returns the failure's message.
fn failure<S, C, Fut>(name: &str, store: S, case: C) -> String
where
    S: Send + Sync + 'static,
    C: FnOnce(Arc<S>) -> Fut + std::panic::UnwindSafe,
    Fut: Future<Output = ()> + Send + 'static,
{
    let store = std::panic::AssertUnwindSafe(store);
    let result = std::panic::catch_unwind(move || {
        let store = store;
        run_within(name, LIMIT, async move || Some(store.0), case);
    });
    let payload = result.expect_err("the planted bug went unnoticed");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .expect("a message")
}

fn assert_names(message: &str, case: &str) {
    assert!(
        message.starts_with(&format!("conformance case `{case}` ")),
        "the failure does not name {case}: {message}"
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// None: the in-memory store as it is.
    None,
    /// `head()` stays one behind the last commit.
    StaleHead,
    /// Event times keep milliseconds only.
    Milliseconds,
    /// A command record is committed after its events, in a second step.
    TornLog,
    /// A process-save conflict reports the version found as the one expected.
    ConflictVersions,
    /// Commits never wake subscribers.
    Silent,
    /// A conditional commit checks its condition, then commits in a second step.
    CheckThenWrite,
    /// A condition's item matches events carrying any of its tags, not all.
    AnyTag,
}

/// The in-memory store with one planted bug.
#[derive(Clone)]
struct Planted {
    inner: InMemoryEventStore,
    bug: Bug,
    /// What [`Bug::Silent`] subscribes to: a notifier nobody signals.
    silent: cqrs_core::store::CommitNotifier,
}

impl Planted {
    fn new(bug: Bug) -> Self {
        Self {
            inner: InMemoryEventStore::new(),
            bug,
            silent: cqrs_core::store::CommitNotifier::new(),
        }
    }
}

#[async_trait]
impl EventReader for Planted {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from).await
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from, limit).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head = self.inner.head().await?;
        Ok(match self.bug {
            Bug::StaleHead => Position::new(head.get().saturating_sub(1)),
            _ => head,
        })
    }

    fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream {
        if self.bug == Bug::Silent {
            // The subscription catches up, then waits for ever.
            return cqrs_core::store::subscription(
                Arc::new(self.inner.clone()),
                &self.silent,
                from,
                filter,
                cqrs_core::store::SubscriptionOptions::default(),
            );
        }
        self.inner.subscribe_batches(from, filter)
    }
}

#[async_trait]
impl DcbStore for Planted {
    async fn read_query(
        &self,
        query: &EventQuery,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_query(query, from, limit).await
    }

    async fn commit_if(&self, mut commit: ConditionalCommit) -> Result<Vec<Appended>, StoreError> {
        match (self.bug, commit.condition.take()) {
            (Bug::CheckThenWrite, Some(condition)) => {
                let after = condition.after.map_or(Position::START, Position::next);
                if let Some(found) = self
                    .inner
                    .read_query(&condition.query, after, 1)
                    .await?
                    .first()
                {
                    return Err(StoreError::ConditionFailed {
                        after: condition.after,
                        found: found.position,
                    });
                }
                tokio::task::yield_now().await;
                self.inner.commit_if(commit).await
            }
            (Bug::AnyTag, Some(mut condition)) => {
                if let Some(items) = condition.query.alternatives() {
                    let split = items.iter().flat_map(|item| {
                        item.tags
                            .iter()
                            .map(|tag| QueryItem {
                                types: item.types.clone(),
                                tags: vec![tag.clone()],
                            })
                            .chain(item.tags.is_empty().then(|| item.clone()))
                            .collect::<Vec<_>>()
                    });
                    condition.query = EventQuery::items(split);
                }
                self.inner.commit_if(commit.with_condition(condition)).await
            }
            (_, condition) => {
                commit.condition = condition;
                self.inner.commit_if(commit).await
            }
        }
    }
}

#[async_trait]
impl EventStore for Planted {
    async fn commit(&self, mut commit: Commit) -> Result<Appended, StoreError> {
        match self.bug {
            Bug::Milliseconds => {
                for event in &mut commit.events {
                    event.metadata.recorded_at = event.metadata.recorded_at.trunc_subsecs(3);
                }
                self.inner.commit(commit).await
            }
            Bug::TornLog if commit.command.is_some() => {
                let command = commit.command.take().expect("a command");
                let stream = commit.stream.clone();
                let appended = self.inner.commit(commit).await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                self.inner
                    .commit(
                        Commit::new(stream, ExpectedVersion::Any, Vec::new()).with_command(command),
                    )
                    .await?;
                Ok(appended)
            }
            _ => self.inner.commit(commit).await,
        }
    }
}

#[async_trait]
impl MessageLog for Planted {
    async fn find_command(&self, id: Uuid) -> Result<Option<cqrs_core::CommandRecord>, StoreError> {
        self.inner.find_command(id).await
    }

    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
        self.inner.query_log(query).await
    }
}

#[async_trait]
impl ProcessStore for Planted {
    async fn load_process(&self, id: &StreamId) -> Result<Option<ProcessState>, StoreError> {
        self.inner.load_process(id).await
    }

    async fn save_process(&self, save: ProcessSave) -> Result<(), StoreError> {
        match self.inner.save_process(save).await {
            Err(StoreError::Conflict { stream, actual, .. })
                if self.bug == Bug::ConflictVersions =>
            {
                Err(StoreError::Conflict {
                    stream,
                    expected: ExpectedVersion::Exact(actual),
                    actual,
                })
            }
            other => other,
        }
    }

    async fn list_processes(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<ProcessState>, StoreError> {
        self.inner.list_processes(after, limit).await
    }
}

#[async_trait]
impl ScheduleStore for Planted {
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError> {
        self.inner.schedule(commands).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        self.inner.claim_due(now, limit, lease).await
    }

    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        self.inner.list_scheduled(after, limit).await
    }

    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        self.inner.complete_scheduled(ids).await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.next_due().await
    }
}

// Snapshots and checkpoints as the in-memory store keeps them, so that a `Planted` is a whole
// `Storage`: one whose schedule keeps no dead letters (the trait's default parking).
#[async_trait]
impl cqrs_core::SnapshotStore for Planted {
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u16,
    ) -> Result<Option<cqrs_core::Snapshot>, StoreError> {
        self.inner.load_snapshot(stream, schema_version).await
    }

    async fn save_snapshot(&self, snapshot: cqrs_core::Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
}

#[async_trait]
impl cqrs_core::CheckpointStore for Planted {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete_checkpoint(name).await
    }
}

#[tokio::test]
async fn where_a_store_keeps_no_dead_letters_the_give_up_is_logged_and_dropped() {
    let store = Arc::new(Planted::new(Bug::None));
    let lost = cqrs_core::CommandEnvelope {
        id: Uuid::new_v4(),
        target: "nowhere-1".parse().expect("stream id"),
        command_type: "order.confirm".into(),
        payload: cqrs_core::Json::null(),
        correlation_id: None,
        causation_id: None,
        headers: cqrs_core::Headers::new(),
    };
    store
        .schedule(vec![ScheduledCommand::new(lost.clone(), Utc::now())])
        .await
        .expect("schedule");
    let dispatcher = cqrs_core::CommandDispatcher::new(
        Arc::clone(&store) as Arc<dyn cqrs_core::Storage>,
        Arc::new(cqrs_core::CommandRouter::new()),
    )
    .with_max_attempts(1);
    assert_eq!(
        dispatcher.run_due().await.expect("run"),
        1,
        "given up at once"
    );
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "and dropped"
    );
    let record = store
        .find_command(lost.id)
        .await
        .expect("find")
        .expect("the give-up is in the message log, the only trace left");
    let cqrs_core::Outcome::Rejected { message, .. } = record.outcome else {
        panic!("recorded as rejected: {:?}", record.outcome);
    };
    assert!(
        message.starts_with("gave up after 1 attempt: "),
        "{message}"
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScheduleBug {
    /// None: a correct schedule.
    None,
    /// Claims ignore leases: a claimed command is claimable again at once.
    IgnoresLeases,
    /// Claims take due commands in the order they were scheduled, not earliest due first.
    ClaimsInScheduleOrder,
    /// Scheduling an id again replaces it (due time, attempts, lease).
    RescheduleResets,
    /// Parking keeps nothing (the trait's defaults): dead letters are lost.
    KeepsNoDeadLetters,
    /// A parked command stays claimable once its lease ends.
    ParkedStillDue,
}

/// A parked command: the command, when, why.
type Parked = (ScheduledCommand, DateTime<Utc>, String);

/// A scheduled command, the order it was scheduled in, and when it is next claimable.
type Entry = (ScheduledCommand, u64, DateTime<Utc>);

/// A schedule of its own (a store may implement only this trait), with one planted bug.
struct PlantedSchedule {
    bug: ScheduleBug,
    commands: Mutex<BTreeMap<Uuid, Entry>>,
    parked: Mutex<BTreeMap<Uuid, Parked>>,
    scheduled: Mutex<u64>,
}

impl PlantedSchedule {
    fn new(bug: ScheduleBug) -> Self {
        Self {
            bug,
            commands: Mutex::default(),
            parked: Mutex::default(),
            scheduled: Mutex::default(),
        }
    }
}

#[async_trait]
impl ScheduleStore for PlantedSchedule {
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError> {
        let mut all = self.commands.lock().expect("lock");
        let parked = self.parked.lock().expect("lock");
        for mut command in commands {
            if parked.contains_key(&command.command.id) {
                continue;
            }
            command.due_at = command.due_at.trunc_subsecs(6);
            let mut n = self.scheduled.lock().expect("lock");
            *n += 1;
            let entry = (command.clone(), *n, command.due_at);
            if self.bug == ScheduleBug::RescheduleResets {
                all.insert(command.command.id, entry);
            } else {
                all.entry(command.command.id).or_insert(entry);
            }
        }
        Ok(())
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let mut all = self.commands.lock().expect("lock");
        let mut due: Vec<(Uuid, u64, DateTime<Utc>)> = all
            .iter()
            .filter(|(_, (_, _, available))| *available <= now)
            .map(|(id, (_, n, available))| (*id, *n, *available))
            .collect();
        if self.bug == ScheduleBug::ClaimsInScheduleOrder {
            due.sort_by_key(|(_, n, _)| *n);
        } else {
            due.sort_by_key(|(id, _, available)| (*available, *id));
        }
        let lease = if self.bug == ScheduleBug::IgnoresLeases {
            chrono::Duration::zero()
        } else {
            lease
        };
        let mut claimed = Vec::new();
        for (id, _, _) in due.into_iter().take(limit) {
            let (command, _, available) = all.get_mut(&id).expect("listed");
            command.attempts += 1;
            *available = now + lease;
            claimed.push(command.clone());
        }
        Ok(claimed)
    }

    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let all = self.commands.lock().expect("lock");
        Ok(all
            .values()
            .filter(|(c, _, _)| after.is_none_or(|a| c.command.id > a))
            .take(limit)
            .map(|(c, _, _)| c.clone())
            .collect())
    }

    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let mut all = self.commands.lock().expect("lock");
        let mut parked = self.parked.lock().expect("lock");
        for id in ids {
            all.remove(id);
            parked.remove(id);
        }
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let all = self.commands.lock().expect("lock");
        Ok(all.values().map(|(_, _, available)| *available).min())
    }

    fn keeps_dead_letters(&self) -> bool {
        self.bug != ScheduleBug::KeepsNoDeadLetters
    }

    async fn park(
        &self,
        id: Uuid,
        attempts: u32,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if self.bug == ScheduleBug::KeepsNoDeadLetters {
            return Ok(false);
        }
        let mut all = self.commands.lock().expect("lock");
        let mut parked = self.parked.lock().expect("lock");
        if all.get(&id).is_none_or(|(c, _, _)| c.attempts != attempts) {
            return Ok(false);
        }
        let command = if self.bug == ScheduleBug::ParkedStillDue {
            all.get(&id).map(|(c, _, _)| c.clone())
        } else {
            all.remove(&id).map(|(c, _, _)| c)
        };
        let Some(command) = command else {
            return Ok(false);
        };
        if parked.contains_key(&id) {
            return Ok(false);
        }
        parked.insert(id, (command, at.trunc_subsecs(6), reason.to_owned()));
        Ok(true)
    }

    async fn list_parked(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<cqrs_core::ParkedCommand>, StoreError> {
        let parked = self.parked.lock().expect("lock");
        Ok(parked
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| **id > a))
            .take(limit)
            .map(|(_, (c, at, reason))| cqrs_core::ParkedCommand {
                scheduled: c.clone(),
                parked_at: *at,
                reason: reason.clone(),
            })
            .collect())
    }

    async fn find_parked(&self, id: Uuid) -> Result<Option<cqrs_core::ParkedCommand>, StoreError> {
        let parked = self.parked.lock().expect("lock");
        Ok(parked
            .get(&id)
            .map(|(c, at, reason)| cqrs_core::ParkedCommand {
                scheduled: c.clone(),
                parked_at: *at,
                reason: reason.clone(),
            }))
    }

    async fn retry_parked(&self, id: Uuid, due_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some((mut command, _, _)) = self.parked.lock().expect("lock").remove(&id) else {
            return Ok(false);
        };
        command.due_at = due_at.trunc_subsecs(6);
        command.attempts = 0;
        let mut n = self.scheduled.lock().expect("lock");
        *n += 1;
        let available = command.due_at;
        self.commands
            .lock()
            .expect("lock")
            .insert(id, (command, *n, available));
        Ok(true)
    }
}

#[test]
fn without_their_bugs_the_planted_stores_pass_their_groups() {
    cqrs_core::conformance_run!(groups(schedule) async || PlantedSchedule::new(ScheduleBug::None));
    cqrs_core::conformance_run!(groups(events, message_log, processes, dcb) async || Planted::new(Bug::None));
}

/// `PlantedSchedule` keeps the trait's own `count_parked`, which pages through the dead letters
/// a thousand at a time: counts that end on a page's edge, inside a page, past the last page,
/// and unbounded are all exact (every shipped store overrides it, so only this covers it).
#[test]
fn the_default_count_of_dead_letters_pages_through_them_all() {
    const PARKED: usize = 2_345;
    let store = PlantedSchedule::new(ScheduleBug::None);
    let target = StreamId::new("order-1").expect("stream id");
    let due = DateTime::<Utc>::UNIX_EPOCH;
    let commands = (0..PARKED)
        .map(|n| {
            ScheduledCommand::new(
                cqrs_core::CommandEnvelope {
                    id: Uuid::new_v4(),
                    target: target.clone(),
                    command_type: "order.expire".into(),
                    payload: cqrs_core::Json::from(serde_json::json!({ "n": n })),
                    correlation_id: None,
                    causation_id: None,
                    headers: Default::default(),
                },
                due,
            )
        })
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(async {
            store.schedule(commands).await.expect("schedule");
            let claimed = store
                .claim_due(due, PARKED + 1, chrono::Duration::seconds(30))
                .await
                .expect("claim");
            assert_eq!(claimed.len(), PARKED);
            for command in &claimed {
                let parked = store
                    .park(command.command.id, command.attempts, "gave up", due)
                    .await
                    .expect("park");
                assert!(parked, "a claimed command parks");
            }
            for (up_to, counted) in [
                (0, 0),
                (1, 1),
                (999, 999),
                (1_000, 1_000),
                (1_001, 1_001),
                (2_000, 2_000),
                (PARKED, PARKED),
                (PARKED + 1, PARKED),
                (usize::MAX, PARKED),
            ] {
                assert_eq!(
                    store.count_parked(up_to).await.expect("count_parked"),
                    counted,
                    "counted up to {up_to}"
                );
            }
        });
}

#[test]
fn ignored_leases_fail_a_named_case() {
    let message = failure(
        "schedule::scheduled_commands_fire_when_due_and_once_claimed",
        PlantedSchedule::new(ScheduleBug::IgnoresLeases),
        |store| cases::schedule::scheduled_commands_fire_when_due_and_once_claimed(store),
    );
    assert_names(
        &message,
        "schedule::scheduled_commands_fire_when_due_and_once_claimed",
    );
    assert!(message.contains("claimed commands are hidden"), "{message}");
}

#[test]
fn claims_out_of_due_order_fail_a_named_case() {
    let message = failure(
        "schedule::claims_come_earliest_due_first",
        PlantedSchedule::new(ScheduleBug::ClaimsInScheduleOrder),
        |store| cases::schedule::claims_come_earliest_due_first(store),
    );
    assert_names(&message, "schedule::claims_come_earliest_due_first");
    assert!(message.contains("earliest due first"), "{message}");
}

#[test]
fn a_reschedule_that_resets_fails_a_named_case() {
    let message = failure(
        "schedule::scheduling_an_id_again_changes_nothing",
        PlantedSchedule::new(ScheduleBug::RescheduleResets),
        |store| cases::schedule::scheduling_an_id_again_changes_nothing(store),
    );
    assert_names(&message, "schedule::scheduling_an_id_again_changes_nothing");
}

#[test]
fn a_store_that_keeps_no_dead_letters_fails_a_named_case() {
    let message = failure(
        "schedule::parked_commands_wait_for_retry_or_discard",
        PlantedSchedule::new(ScheduleBug::KeepsNoDeadLetters),
        |store| cases::schedule::parked_commands_wait_for_retry_or_discard(store),
    );
    assert_names(
        &message,
        "schedule::parked_commands_wait_for_retry_or_discard",
    );
    assert!(message.contains("keeps_dead_letters"), "{message}");
}

#[test]
fn a_parked_command_that_stays_due_fails_a_named_case() {
    let message = failure(
        "schedule::parked_commands_wait_for_retry_or_discard",
        PlantedSchedule::new(ScheduleBug::ParkedStillDue),
        |store| cases::schedule::parked_commands_wait_for_retry_or_discard(store),
    );
    assert_names(
        &message,
        "schedule::parked_commands_wait_for_retry_or_discard",
    );
    assert!(message.contains("never due"), "{message}");
}

#[test]
fn a_stale_head_fails_a_named_case() {
    let message = failure(
        "events::head_reaches_the_last_committed_position",
        Planted::new(Bug::StaleHead),
        |store| cases::events::head_reaches_the_last_committed_position(store),
    );
    assert_names(&message, "events::head_reaches_the_last_committed_position");
    // A case that waits for the head to reach a commit fails too, by name, within the limit.
    let message = failure(
        "events::read_all_pages_in_global_order",
        Planted::new(Bug::StaleHead),
        |store| cases::events::read_all_pages_in_global_order(store),
    );
    assert_names(&message, "events::read_all_pages_in_global_order");
}

#[test]
fn torn_log_reads_fail_a_named_case() {
    let message = failure(
        "message_log::log_queries_never_tear_a_command_from_its_events",
        Planted::new(Bug::TornLog),
        |store| cases::message_log::log_queries_never_tear_a_command_from_its_events(store),
    );
    assert_names(
        &message,
        "message_log::log_queries_never_tear_a_command_from_its_events",
    );
    assert!(message.contains("a torn read"), "{message}");
}

#[test]
fn wrong_conflict_versions_fail_a_named_case() {
    let message = failure(
        "processes::process_conflicts_report_both_versions",
        Planted::new(Bug::ConflictVersions),
        |store| cases::processes::process_conflicts_report_both_versions(store),
    );
    assert_names(
        &message,
        "processes::process_conflicts_report_both_versions",
    );
}

#[test]
fn millisecond_timestamps_fail_a_named_case() {
    let message = failure(
        "events::timestamps_keep_microseconds",
        Planted::new(Bug::Milliseconds),
        |store| cases::events::timestamps_keep_microseconds(store),
    );
    assert_names(&message, "events::timestamps_keep_microseconds");
}

#[test]
fn a_case_that_waits_for_ever_fails_by_name_within_the_limit() {
    // Subscribers are never woken: the live part of the case waits for events that come.
    let message = failure(
        "events::subscription_catches_up_then_follows_live",
        Planted::new(Bug::Silent),
        |store| cases::events::subscription_catches_up_then_follows_live(store),
    );
    assert_names(
        &message,
        "events::subscription_catches_up_then_follows_live",
    );
    assert!(message.contains("did not finish within 5s"), "{message}");
}

#[test]
fn a_case_spinning_on_every_worker_still_fails_by_name() {
    // A store that never yields can hold every runtime thread; the limit must still fire.
    static STOP: AtomicBool = AtomicBool::new(false);
    let message = failure("events::spins", (), |_store| async {
        let spinners: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async {
                    while !STOP.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for spinner in spinners {
            let _ = spinner.await;
        }
    });
    STOP.store(true, Ordering::Relaxed);
    assert_names(&message, "events::spins");
    assert!(message.contains("did not finish within"), "{message}");
}

#[test]
fn a_condition_checked_apart_from_its_write_fails_a_named_case() {
    let message = failure(
        "dcb::racing_deciders_on_one_tag_are_serialized",
        Planted::new(Bug::CheckThenWrite),
        |store| cases::dcb::racing_deciders_on_one_tag_are_serialized(store),
    );
    assert_names(&message, "dcb::racing_deciders_on_one_tag_are_serialized");
}

#[test]
fn a_condition_matching_any_tag_of_an_item_fails_a_named_case() {
    let message = failure("dcb::dcb_model_check", Planted::new(Bug::AnyTag), |store| {
        cases::dcb::dcb_model_check(store)
    });
    assert_names(&message, "dcb::dcb_model_check");
}
