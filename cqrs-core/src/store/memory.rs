use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clock::truncate_to_micros;
use crate::command::CommandRecord;
use crate::dcb::{ConditionalCommit, DcbStore, EventQuery, Tag};
use crate::event::{EventFilter, NewEvent, RecordedEvent, StreamId};
use crate::store::{
    Appended, BatchStream, CheckpointStore, Commit, EventReader, EventStore, LogCursor, LogEntry,
    LogQuery, LoggedMessage, MessageKind, MessageLog, ParkedCommand, ProcessSave, ProcessState,
    ProcessStore, ReadBatch, ScheduleStore, ScheduledCommand, Snapshot, SnapshotStore, StoreError,
    StreamSummary,
};
use crate::subscription::{CommitNotifier, SubscriptionOptions, subscription};
use crate::version::{ExpectedVersion, Position, Version};

/// A complete store in memory: the reference implementation and the test oracle.
///
/// It keeps every invariant the durable stores keep — atomic appends, version checks under
/// concurrency, gap-free global order, duplicate-command detection, microsecond timestamps —
/// so a test that passes here fails for the same reasons as in production. Clones share one
/// store.
///
/// # Examples
///
/// ```
/// use cqrs_core::{EventReader, EventStore, ExpectedVersion, InMemoryEventStore, Json, NewEvent, Position, StreamId};
///
/// # tokio_test::block_on(async {
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::new("seats-1")?;
/// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::new("seats.added", Json::parse("{}")?)]).await?;
/// let all = store.read_all(Position::START, 10).await?;
/// assert_eq!(all.len(), 1);
/// assert_eq!(all[0].position, Position::START);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    notifier: CommitNotifier,
}

#[derive(Debug, Default)]
struct State {
    /// The global log; an event at position p sits at index p - 1.
    events: Vec<RecordedEvent>,
    /// Each stream's events, as indices into `events`.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Each tag's events and each type's, as indices into `events` in log order: a query
    /// reads what matches, not the log.
    tagged: HashMap<Tag, Vec<usize>>,
    typed: HashMap<String, Vec<usize>>,
    snapshots: HashMap<(StreamId, u16), Snapshot>,
    checkpoints: HashMap<String, Position>,
    commands: HashMap<Uuid, (u64, CommandRecord)>,
    command_sequence: u64,
    scheduled: HashMap<Uuid, Scheduled>,
    processes: HashMap<StreamId, ProcessState>,
}

#[derive(Debug, Clone)]
struct Scheduled {
    command: ScheduledCommand,
    claimed_until: Option<DateTime<Utc>>,
    /// When and why it was parked, if it is a dead letter.
    parked: Option<(DateTime<Utc>, String)>,
}

impl Scheduled {
    /// When it can be claimed: never while parked.
    fn available_at(&self) -> Option<DateTime<Utc>> {
        if self.parked.is_some() {
            return None;
        }
        Some(
            self.claimed_until
                .map_or(self.command.due_at, |until| until.max(self.command.due_at)),
        )
    }

    fn parked(&self) -> Option<ParkedCommand> {
        self.parked.as_ref().map(|(at, reason)| ParkedCommand {
            scheduled: self.command.clone(),
            parked_at: *at,
            reason: reason.clone(),
        })
    }
}

impl InMemoryEventStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The notifier this store signals after each commit (to build subscriptions over it).
    #[must_use]
    pub fn notifier(&self) -> &CommitNotifier {
        &self.inner.notifier
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written: every mutation
        // is validated first and applied without fallible steps, so the state is usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn version(&self, stream: &StreamId) -> Version {
        Version::new(self.streams.get(stream).map_or(0, |s| s.len() as u64))
    }

    /// Appends `events` to `stream`, which is at `actual`.
    fn append(&mut self, stream: &StreamId, actual: Version, events: Vec<NewEvent>) -> Appended {
        let mut version = actual;
        let mut position = None;
        for mut event in events {
            event.metadata.recorded_at = truncate_to_micros(event.metadata.recorded_at);
            version = version.next();
            let index = self.events.len();
            let at = Position::new(index as u64 + 1);
            position = Some(at);
            for tag in &event.tags {
                self.tagged.entry(tag.clone()).or_default().push(index);
            }
            match self.typed.get_mut(&event.event_type) {
                Some(indices) => indices.push(index),
                None => {
                    self.typed.insert(event.event_type.clone(), vec![index]);
                }
            }
            self.events
                .push(RecordedEvent::from_new(event, stream.clone(), version, at));
            self.streams.entry(stream.clone()).or_default().push(index);
        }
        Appended { version, position }
    }

    /// The events from position `from` on (an event at position p sits at index p - 1).
    fn events_from(&self, from: Position) -> &[RecordedEvent] {
        let start = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        &self.events[start.min(self.events.len())..]
    }

    /// Up to `limit` events matching `query` from position `from` on, in log order. An item
    /// with tags walks its first tag's events, one with types only its types' events.
    fn matching(&self, query: &EventQuery, from: Position, limit: usize) -> Vec<&RecordedEvent> {
        let start = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        let Some(items) = query.alternatives() else {
            return self.events_from(from).iter().take(limit).collect();
        };
        let mut found: Vec<usize> = Vec::new();
        for item in items {
            let lists: Vec<&[usize]> = match item.tags.first() {
                Some(tag) => vec![self.tagged.get(tag).map_or(&[][..], Vec::as_slice)],
                None => item
                    .types
                    .iter()
                    .map(|ty| self.typed.get(ty).map_or(&[][..], Vec::as_slice))
                    .collect(),
            };
            for list in lists {
                let from_here = &list[list.partition_point(|&i| i < start)..];
                found.extend(
                    from_here
                        .iter()
                        .copied()
                        .filter(|&i| {
                            let event = &self.events[i];
                            item.matches(&event.event_type, &event.tags)
                        })
                        .take(limit),
                );
            }
        }
        found.sort_unstable();
        found.dedup();
        found.truncate(limit);
        found.into_iter().map(|i| &self.events[i]).collect()
    }

    fn check_duplicate(&self, command: Option<&CommandRecord>) -> Result<(), StoreError> {
        match command {
            Some(command) if self.commands.contains_key(&command.command_id) => {
                Err(StoreError::DuplicateCommand {
                    command_id: command.command_id,
                })
            }
            _ => Ok(()),
        }
    }

    fn record_command(&mut self, mut record: CommandRecord) {
        record.recorded_at = truncate_to_micros(record.recorded_at);
        self.command_sequence += 1;
        self.commands
            .insert(record.command_id, (self.command_sequence, record));
    }

    fn schedule(&mut self, commands: Vec<ScheduledCommand>) {
        for mut command in commands {
            command.due_at = truncate_to_micros(command.due_at);
            command.attempts = 0;
            self.scheduled
                .entry(command.command.id)
                .or_insert(Scheduled {
                    command,
                    claimed_until: None,
                    parked: None,
                });
        }
    }
}

#[async_trait]
impl EventReader for InMemoryEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_page(stream, from, usize::MAX).await
    }

    async fn read_stream_page(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.lock();
        let Some(indices) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(indices
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| state.events[i].clone())
            .collect())
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamSummary>, StoreError> {
        let state = self.lock();
        let mut names: Vec<&StreamId> = state
            .streams
            .keys()
            .filter(|s| s.as_str().starts_with(prefix))
            .filter(|s| after.is_none_or(|after| s.as_str() > after))
            .collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(names
            .into_iter()
            .take(limit)
            .filter_map(|stream| {
                let last = *state.streams[stream].last()?;
                Some(StreamSummary::of_last(&state.events[last]))
            })
            .collect())
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.lock();
        let start = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn read_filtered(
        &self,
        from: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadBatch, StoreError> {
        let state = self.lock();
        let start = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        let limit = limit.max(1);
        let mut events = Vec::new();
        let mut next = from;
        for event in state.events.iter().skip(start) {
            next = event.position.next();
            if filter.matches(event) {
                events.push(event.clone());
                if events.len() == limit {
                    break;
                }
            }
        }
        let end = next.get() > state.events.len() as u64;
        Ok(ReadBatch { events, next, end })
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(Position::new(self.lock().events.len() as u64))
    }

    fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream {
        subscription(
            Arc::new(self.clone()),
            &self.inner.notifier,
            from,
            filter,
            SubscriptionOptions::default(),
        )
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn commit(&self, commit: Commit) -> Result<Appended, StoreError> {
        commit.validate()?;
        let appended = {
            let mut state = self.lock();
            if let Some(command) = &commit.command
                && state.commands.contains_key(&command.command_id)
            {
                return Err(StoreError::DuplicateCommand {
                    command_id: command.command_id,
                });
            }
            let actual = state.version(&commit.stream);
            if !commit.expected.matches(actual) {
                return Err(StoreError::Conflict {
                    stream: commit.stream,
                    expected: commit.expected,
                    actual,
                });
            }
            let appended = state.append(&commit.stream, actual, commit.events);
            if let Some(command) = commit.command {
                state.record_command(command);
            }
            appended
        };
        if appended.position.is_some() {
            self.inner.notifier.notify();
        }
        Ok(appended)
    }
}

#[async_trait]
impl DcbStore for InMemoryEventStore {
    async fn read_query(
        &self,
        query: &EventQuery,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        query.validate()?;
        let state = self.lock();
        Ok(state
            .matching(query, from, limit)
            .into_iter()
            .cloned()
            .collect())
    }

    async fn commit_if(&self, commit: ConditionalCommit) -> Result<Vec<Appended>, StoreError> {
        commit.validate()?;
        let appended = {
            let mut state = self.lock();
            state.check_duplicate(commit.command.as_ref())?;
            if let Some(condition) = &commit.condition {
                let after = condition.after.map_or(Position::START, Position::next);
                if let Some(found) = state.matching(&condition.query, after, 1).first() {
                    return Err(StoreError::ConditionFailed {
                        after: condition.after,
                        found: found.position,
                    });
                }
            }
            let mut versions = Vec::with_capacity(commit.appends.len());
            for append in &commit.appends {
                let actual = state.version(&append.stream);
                if !append.expected.matches(actual) {
                    return Err(StoreError::Conflict {
                        stream: append.stream.clone(),
                        expected: append.expected,
                        actual,
                    });
                }
                versions.push(actual);
            }
            let mut appended = Vec::with_capacity(versions.len());
            for (append, actual) in commit.appends.into_iter().zip(versions) {
                appended.push(state.append(&append.stream, actual, append.events));
            }
            if let Some(command) = commit.command {
                state.record_command(command);
            }
            appended
        };
        self.inner.notifier.notify();
        Ok(appended)
    }
}

#[async_trait]
impl SnapshotStore for InMemoryEventStore {
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u16,
    ) -> Result<Option<Snapshot>, StoreError> {
        Ok(self
            .lock()
            .snapshots
            .get(&(stream.clone(), schema_version))
            .cloned())
    }

    async fn save_snapshot(&self, mut snapshot: Snapshot) -> Result<(), StoreError> {
        snapshot.taken_at = truncate_to_micros(snapshot.taken_at);
        let key = (snapshot.stream.clone(), snapshot.schema_version);
        let mut state = self.lock();
        match state.snapshots.get(&key) {
            Some(stored) if stored.version > snapshot.version => {}
            _ => {
                state.snapshots.insert(key, snapshot);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for InMemoryEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        Ok(self.lock().checkpoints.get(name).copied())
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.lock().checkpoints.insert(name.to_owned(), position);
        Ok(())
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        self.lock().checkpoints.remove(name);
        Ok(())
    }
}

#[async_trait]
impl MessageLog for InMemoryEventStore {
    async fn find_command(&self, id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        Ok(self
            .lock()
            .commands
            .get(&id)
            .map(|(_, record)| record.clone()))
    }

    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
        let state = self.lock();
        let mut entries: Vec<LogEntry> = Vec::new();
        for (sequence, record) in state.commands.values() {
            let cursor = LogCursor {
                recorded_at: record.recorded_at,
                kind: MessageKind::Command,
                sequence: *sequence,
            };
            if query.matches(
                &cursor,
                &record.command_type,
                &record.target,
                record.correlation_id,
            ) {
                entries.push(LogEntry {
                    cursor,
                    message: LoggedMessage::Command(record.clone()),
                });
            }
        }
        for event in &state.events {
            let cursor = LogCursor {
                recorded_at: event.metadata.recorded_at,
                kind: MessageKind::Event,
                sequence: event.position.get(),
            };
            if query.matches(
                &cursor,
                &event.event_type,
                &event.stream,
                event.metadata.correlation_id,
            ) {
                entries.push(LogEntry {
                    cursor,
                    message: LoggedMessage::Event(event.clone()),
                });
            }
        }
        Ok(crate::store::log_page(query, entries))
    }
}

#[async_trait]
impl ScheduleStore for InMemoryEventStore {
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError> {
        for command in &commands {
            command.validate()?;
        }
        self.lock().schedule(commands);
        Ok(())
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let mut state = self.lock();
        let mut due: Vec<&mut Scheduled> = state
            .scheduled
            .values_mut()
            .filter(|s| s.available_at().is_some_and(|at| at <= now))
            .collect();
        due.sort_by_key(|s| (s.command.due_at, s.command.command.id));
        let until = truncate_to_micros(crate::store::lease_until(now, lease));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|s| {
                s.claimed_until = Some(until);
                s.command.attempts = s.command.attempts.saturating_add(1);
                s.command.clone()
            })
            .collect())
    }

    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let state = self.lock();
        let mut all: Vec<&ScheduledCommand> = state
            .scheduled
            .values()
            .filter(|s| s.parked.is_none())
            .map(|s| &s.command)
            .filter(|c| after.is_none_or(|a| c.command.id > a))
            .collect();
        all.sort_by_key(|c| c.command.id);
        Ok(all.into_iter().take(limit).cloned().collect())
    }

    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let mut state = self.lock();
        for id in ids {
            state.scheduled.remove(id);
        }
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .lock()
            .scheduled
            .values()
            .filter_map(Scheduled::available_at)
            .min())
    }

    fn keeps_dead_letters(&self) -> bool {
        true
    }

    async fn park(
        &self,
        id: Uuid,
        attempts: u32,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        match state.scheduled.get_mut(&id) {
            Some(s) if s.parked.is_none() && s.command.attempts == attempts => {
                s.parked = Some((truncate_to_micros(at), reason.to_owned()));
                s.claimed_until = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn list_parked(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ParkedCommand>, StoreError> {
        let state = self.lock();
        let mut parked: Vec<ParkedCommand> = state
            .scheduled
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| **id > a))
            .filter_map(|(_, s)| s.parked())
            .collect();
        parked.sort_by_key(|p| p.scheduled.command.id);
        parked.truncate(limit);
        Ok(parked)
    }

    async fn count_parked(&self, up_to: usize) -> Result<usize, StoreError> {
        let state = self.lock();
        Ok(state
            .scheduled
            .values()
            .filter(|s| s.parked.is_some())
            .take(up_to)
            .count())
    }

    async fn find_parked(&self, id: Uuid) -> Result<Option<ParkedCommand>, StoreError> {
        Ok(self.lock().scheduled.get(&id).and_then(Scheduled::parked))
    }

    async fn retry_parked(&self, id: Uuid, due_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut state = self.lock();
        match state.scheduled.get_mut(&id) {
            Some(s) if s.parked.is_some() => {
                s.parked = None;
                s.claimed_until = None;
                s.command.due_at = truncate_to_micros(due_at);
                s.command.attempts = 0;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl ProcessStore for InMemoryEventStore {
    async fn load_process(&self, id: &StreamId) -> Result<Option<ProcessState>, StoreError> {
        Ok(self.lock().processes.get(id).cloned())
    }

    async fn list_processes(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<ProcessState>, StoreError> {
        let state = self.lock();
        let mut all: Vec<&ProcessState> = state
            .processes
            .values()
            .filter(|p| after.is_none_or(|a| p.id.as_str() > a.as_str()))
            .collect();
        all.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(all.into_iter().take(limit).cloned().collect())
    }

    async fn save_process(&self, save: ProcessSave) -> Result<(), StoreError> {
        for command in &save.outbox {
            command.validate()?;
        }
        let mut state = self.lock();
        if let Some(handled) = &save.handled
            && state.commands.contains_key(&handled.command_id)
        {
            return Err(StoreError::DuplicateCommand {
                command_id: handled.command_id,
            });
        }
        let actual = state
            .processes
            .get(&save.id)
            .map_or(Version::ZERO, |p| p.version);
        if actual != save.expected {
            return Err(StoreError::Conflict {
                stream: save.id,
                expected: ExpectedVersion::Exact(save.expected),
                actual,
            });
        }
        let process = ProcessState {
            id: save.id.clone(),
            version: actual.next(),
            state: save.state,
            completed: save.completed,
            last_position: save.last_position,
            updated_at: truncate_to_micros(save.saved_at),
        };
        state.processes.insert(save.id, process);
        for id in &save.cancel {
            state.scheduled.remove(id);
        }
        state.schedule(save.outbox);
        if let Some(handled) = save.handled {
            state.record_command(handled);
        }
        Ok(())
    }
}
