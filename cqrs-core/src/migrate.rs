//! Store migration: copy one store into another in today's shapes, without touching the
//! source.
//!
//! A [`Migration`] reads the source's global log in order, upcasts every event through the
//! application's [`Upcasters`], backfills metadata old events lack, and appends the result to
//! the target in the same order, so the target's positions keep the source's order. Events
//! the old system never stored (the CQRS Journey's V1 discarded its conference integration
//! events) can be re-created as a *prelude*, written before all history with earlier
//! timestamps. Named checkpoints (process managers, persistent projections) are carried
//! over, translated to the target's positions, so nothing is processed twice.
//!
//! It is resumable: a killed migration continues with [`Migration::resume`], skipping what
//! the target already holds (recognised by event id, which the copy keeps). It refuses a
//! target that holds data unless resuming, and it only ever reads the source.
//! [`Migration::verify`] then proves the target holds exactly the upcast source.
//!
//! # Examples
//!
//! ```
//! use cqrs_core::migrate::Migration;
//! use cqrs_core::{Commit, EventReader, EventStore, ExpectedVersion, InMemoryEventStore, Json, NewEvent, Position, StreamId, Upcasters};
//!
//! # tokio_test::block_on(async {
//! let old = InMemoryEventStore::new();
//! let stream = StreamId::new("order-1")?;
//! old.commit(Commit::new(stream.clone(), ExpectedVersion::NoStream, vec![
//!     NewEvent::new("OrderPaymentConfirmed", Json::parse("{}")?),
//! ])).await?;
//!
//! let new = InMemoryEventStore::new();
//! let migration = Migration::new(Upcasters::new().rename("OrderPaymentConfirmed", 1, "order.confirmed", 1));
//! let report = migration.run(&old, &new, &mut |_| {}).await?;
//! assert_eq!(report.events_written, 1);
//! assert_eq!(new.read_all(Position::START, 10).await?[0].event_type, "order.confirmed");
//! assert!(migration.verify(&old, &new).await?.is_identical());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Json;
use crate::event::{Metadata, NewEvent, RecordedEvent, StreamId};
use crate::store::{Commit, ProcessSave, Storage, StoreError};
use crate::upcast::{UpcastError, Upcasted, Upcasters};
use crate::version::{ExpectedVersion, Position, Version};

/// The header naming the source position an event was copied from.
pub const SOURCE_POSITION: &str = "cqrs.migrated_from";

/// The checkpoint, in the target, of the last source position copied.
pub const PROGRESS_CHECKPOINT: &str = "cqrs.migration.source_position";

/// The checkpoint, in the target, set once the prelude is written.
pub const PRELUDE_CHECKPOINT: &str = "cqrs.migration.prelude";

/// Fills in what an old event's metadata lacks; it sees the event as stored.
pub type Backfill = Arc<dyn Fn(&RecordedEvent, &mut Metadata) + Send + Sync>;

/// How far a migration has come, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The last source position copied.
    pub position: Position,
    /// The source's head when the migration started.
    pub head: Position,
    /// Events written to the target so far, in this run.
    pub written: u64,
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Source events read in this run.
    pub events_read: u64,
    /// Events written to the target in this run (upcasting may split events).
    pub events_written: u64,
    /// Events skipped because the target had them already (a resumed run).
    pub events_skipped: u64,
    /// Prelude events written in this run.
    pub prelude_written: u64,
    /// Where in the source this run started (after the last position already copied).
    pub started_at: Position,
    /// Each carried checkpoint: its name, source position and target position.
    pub checkpoints: Vec<(String, Position, Position)>,
    /// Process-manager instances copied (their last positions translated).
    pub processes: u64,
    /// Scheduled commands (timeouts, outboxes) copied, parked ones (dead letters) included.
    pub scheduled: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

/// Why a migration stopped. The source is never changed; each says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The target holds events and this is not a resumed run.
    #[error(
        "the target already holds events (head {head}): migrate into an empty store, or resume \
         the interrupted migration that wrote them"
    )]
    TargetNotEmpty {
        /// The target's head.
        head: Position,
    },
    /// Resuming, but the target holds no migration progress.
    #[error(
        "the target has no migration progress to resume (head {head}); run without resuming \
         into an empty store"
    )]
    NothingToResume {
        /// The target's head.
        head: Position,
    },
    /// An event could not be upcast: fix the upcaster, then resume; nothing after it was
    /// written.
    #[error(
        "cannot upcast {event_type} v{schema_version} at source position {position} \
         ({stream}): {source}; the target holds everything before it: fix the upcaster and \
         resume"
    )]
    Upcast {
        /// The source position.
        position: Position,
        /// The stream.
        stream: StreamId,
        /// The stored type.
        event_type: String,
        /// The stored schema version.
        schema_version: u16,
        /// The upcaster's error.
        #[source]
        source: UpcastError,
    },
    /// A resumed run found a different event where it expected its own copy.
    #[error(
        "the target's stream {stream} differs from the source at version {version}: it was \
         written by something other than this migration; start again into an empty store"
    )]
    Diverged {
        /// The stream.
        stream: StreamId,
        /// Its version in the target.
        version: Version,
    },
    /// A store failed; resuming continues where it stopped.
    #[error("a store failed: {0}; resume the migration once it is back")]
    Store(#[from] StoreError),
}

/// What [`Migration::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Source events compared (after upcasting).
    pub compared: u64,
    /// Prelude events found in the target.
    pub prelude: u64,
    /// Differences, each described (at most 20 kept).
    pub differences: Vec<String>,
    /// Source events the target lacks.
    pub missing: u64,
    /// Process instances compared.
    pub processes: u64,
    /// Scheduled commands compared, parked ones (dead letters) included.
    pub scheduled: u64,
}

impl Verification {
    /// Whether the target holds exactly the prelude then the upcast source.
    #[must_use]
    pub fn is_identical(&self) -> bool {
        self.differences.is_empty() && self.missing == 0
    }

    fn differ(&mut self, what: String) {
        if self.differences.len() < 20 {
            self.differences.push(what);
        }
    }
}

/// A copy-transform of one store into another; see the [module](self) docs. Use one
/// `Migration` (and its clones) for one target: it remembers what it read of it.
#[derive(Clone)]
pub struct Migration {
    upcasters: Upcasters,
    backfill: Option<Backfill>,
    prelude: Vec<Commit>,
    checkpoints: Vec<String>,
    batch: usize,
    /// The target's source positions, read once and extended run by run.
    positions: Arc<std::sync::Mutex<Option<PositionMap>>>,
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("upcasters", &self.upcasters)
            .field("prelude_commits", &self.prelude.len())
            .field("checkpoints", &self.checkpoints)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Migration {
    /// A migration through `upcasters`, with no backfill, no prelude and no checkpoints.
    #[must_use]
    pub fn new(upcasters: Upcasters) -> Self {
        Self {
            upcasters,
            backfill: None,
            prelude: Vec::new(),
            checkpoints: Vec::new(),
            batch: 1_000,
            positions: Arc::default(),
        }
    }

    /// Fills in the metadata old events lack (for example a correlation id); the event id,
    /// the time it was recorded and anything already set are kept unless `backfill` changes
    /// them.
    #[must_use]
    pub fn with_backfill(
        mut self,
        backfill: impl Fn(&RecordedEvent, &mut Metadata) + Send + Sync + 'static,
    ) -> Self {
        self.backfill = Some(Arc::new(backfill));
        self
    }

    /// Events the old system never stored, re-created (for example from its state tables):
    /// written first, in this order, before all history. Give them timestamps before the
    /// history's and fixed event ids, so that a resumed run recognises them.
    #[must_use]
    pub fn with_prelude(mut self, commits: Vec<Commit>) -> Self {
        self.prelude = commits;
        self
    }

    /// Carries the named checkpoints over, translated to the target's positions (never
    /// before the prelude's end: what it re-creates was processed already).
    #[must_use]
    pub fn with_checkpoints<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.checkpoints = names.into_iter().map(Into::into).collect();
        self
    }

    /// Reads and writes `batch` events at a time (1,000 by default).
    #[must_use]
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Copies `from` into the empty store `to`.
    ///
    /// # Errors
    ///
    /// [`MigrationError::TargetNotEmpty`] if `to` holds events; otherwise as
    /// [`resume`](Self::resume).
    pub async fn run(
        &self,
        from: &dyn Storage,
        to: &dyn Storage,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<MigrationReport, MigrationError> {
        let head = to.head().await?;
        if head > Position::ZERO {
            return Err(MigrationError::TargetNotEmpty { head });
        }
        self.copy(from, to, Position::ZERO, false, progress).await
    }

    /// Continues a migration into `to` that was interrupted (killed, or stopped by an error
    /// since fixed).
    ///
    /// # Errors
    ///
    /// [`MigrationError::NothingToResume`] if `to` holds no migration progress,
    /// [`MigrationError::Upcast`] for an event the upcasters cannot read,
    /// [`MigrationError::Diverged`] if `to` was written by something else,
    /// [`MigrationError::Store`] if a store fails.
    pub async fn resume(
        &self,
        from: &dyn Storage,
        to: &dyn Storage,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<MigrationReport, MigrationError> {
        let head = to.head().await?;
        let done = to.load_checkpoint(PROGRESS_CHECKPOINT).await?;
        let prelude = to.load_checkpoint(PRELUDE_CHECKPOINT).await?;
        if head > Position::ZERO && done.is_none() && prelude.is_none() {
            return Err(MigrationError::NothingToResume { head });
        }
        self.copy(from, to, done.unwrap_or(Position::ZERO), true, progress)
            .await
    }

    async fn copy(
        &self,
        from: &dyn Storage,
        to: &dyn Storage,
        done: Position,
        resuming: bool,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<MigrationReport, MigrationError> {
        let started = Instant::now();
        let source_head = from.head().await?;
        let mut writer = Writer {
            to,
            resuming,
            versions: HashMap::new(),
            present: HashMap::new(),
            written: 0,
            skipped: 0,
        };
        let mut report = MigrationReport {
            events_read: 0,
            events_written: 0,
            events_skipped: 0,
            prelude_written: 0,
            started_at: done.next(),
            checkpoints: Vec::new(),
            processes: 0,
            scheduled: 0,
            elapsed: Duration::ZERO,
        };

        // The prelude, once.
        let prelude_end = match to.load_checkpoint(PRELUDE_CHECKPOINT).await? {
            Some(end) => end,
            None => {
                // Marks the migration as started, so that a run killed in the prelude resumes.
                if to.load_checkpoint(PROGRESS_CHECKPOINT).await?.is_none() {
                    to.save_checkpoint(PROGRESS_CHECKPOINT, Position::ZERO)
                        .await?;
                }
                let mut end = Position::ZERO;
                let prelude = self
                    .prelude
                    .iter()
                    .map(|c| (c.stream.clone(), c.events.clone()))
                    .collect();
                for last in writer.write_all(prelude).await?.into_iter().flatten() {
                    end = end.max(last);
                }
                report.prelude_written = writer.written;
                writer.written = 0;
                let end = end.max(to.head().await?);
                to.save_checkpoint(PRELUDE_CHECKPOINT, end).await?;
                end
            }
        };

        // Source checkpoints to carry, by source position.
        let mut wanted = BTreeMap::new();
        for name in &self.checkpoints {
            if let Some(at) = from.load_checkpoint(name).await? {
                wanted.insert(name.clone(), at);
            }
        }
        let mut carried: BTreeMap<String, Position> = BTreeMap::new();
        // Target position of the last event copied, for checkpoints at or after it.
        let mut last_target = prelude_end;

        let mut next = done.next();
        loop {
            let page = from.read_all(next, self.batch).await?;
            let Some(last) = page.last() else { break };
            next = last.position.next();
            report.events_read += page.len() as u64;
            // Consecutive events of one stream go in one commit; a checkpoint's position
            // ends a group, so that it maps to an exact target position. The page's commits
            // go to the target in order, in one transaction where the store can.
            let mut group: Vec<&RecordedEvent> = Vec::new();
            let mut sources = Vec::new();
            let mut batch = Vec::new();
            for (i, event) in page.iter().enumerate() {
                group.push(event);
                let ends = page.get(i + 1).is_none_or(|n| n.stream != event.stream)
                    || wanted.values().any(|p| *p == event.position);
                if !ends {
                    continue;
                }
                let mut events = Vec::new();
                for recorded in group.drain(..) {
                    events.extend(self.transform(recorded)?);
                }
                sources.push(event.position);
                batch.push((event.stream.clone(), events));
            }
            let written = writer.write_all(batch).await?;
            for (source_at, target_at) in sources.into_iter().zip(written) {
                if let Some(at) = target_at {
                    last_target = last_target.max(at);
                }
                for (name, wanted_at) in &wanted {
                    if *wanted_at >= source_at {
                        carried.insert(name.clone(), last_target);
                    }
                }
            }
            to.save_checkpoint(PROGRESS_CHECKPOINT, last.position)
                .await?;
            progress(Progress {
                position: last.position,
                head: source_head,
                written: writer.written,
            });
        }
        for (name, source_at) in &wanted {
            let target_at = carried
                .get(name)
                .copied()
                .unwrap_or(prelude_end)
                .max(prelude_end);
            to.save_checkpoint(name, target_at).await?;
            report
                .checkpoints
                .push((name.clone(), *source_at, target_at));
        }
        // In-flight work: process instances (their positions translated) and pending
        // commands, so that orders under way go on in the target.
        let (processes, scheduled) = self.copy_process_state(from, to).await?;
        report.processes = processes;
        report.scheduled = scheduled;
        report.events_written = writer.written;
        report.events_skipped = writer.skipped;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Brings the target's process instances and pending scheduled commands in line with the
    /// source's: instances new or changed since the last run are written (their last
    /// positions translated to the target's), commands pending in the source are scheduled
    /// (and parked, if they are dead letters there), and commands the target holds that the source has since completed are removed. Run
    /// last, after the source stopped writing, it hands over the work under way.
    async fn copy_process_state(
        &self,
        from: &dyn Storage,
        to: &dyn Storage,
    ) -> Result<(u64, u64), MigrationError> {
        // Positions are translated only for instances: a source with none needs no map.
        let any = !from.list_processes(None, 1).await?.is_empty();
        let map = {
            let cached = self
                .positions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let mut map = cached.unwrap_or_default();
            if any {
                map.extend(to, self.batch).await?;
            }
            map
        };
        let mut written = 0u64;
        let mut after: Option<StreamId> = None;
        loop {
            let page = from.list_processes(after.as_ref(), self.batch).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for process in page {
                let last_position = map.translate(process.last_position);
                let expected = match to.load_process(&process.id).await? {
                    None => Version::ZERO,
                    Some(copy)
                        if copy.completed == process.completed
                            && copy.last_position == last_position
                            && copy.state.to_value().ok() == process.state.to_value().ok() =>
                    {
                        continue;
                    }
                    Some(copy) => copy.version,
                };
                match to
                    .save_process(ProcessSave {
                        id: process.id,
                        expected,
                        state: process.state,
                        completed: process.completed,
                        last_position,
                        outbox: Vec::new(),
                        cancel: Vec::new(),
                        handled: None,
                        saved_at: process.updated_at,
                    })
                    .await
                {
                    Ok(()) => written += 1,
                    // Something else runs the target's processes: it is not ours to change.
                    Err(StoreError::Conflict { stream, actual, .. }) => {
                        return Err(MigrationError::Diverged {
                            stream,
                            version: actual,
                        });
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        *self
            .positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(map);
        let pending = all_scheduled(from, self.batch).await?;
        let parked = all_parked(from, self.batch).await?;
        let ids: HashSet<Uuid> = pending
            .iter()
            .map(|c| c.command.id)
            .chain(parked.iter().map(|p| p.scheduled.command.id))
            .collect();
        let target_pending: HashMap<Uuid, DateTime<Utc>> = all_scheduled(to, self.batch)
            .await?
            .into_iter()
            .map(|c| (c.command.id, c.due_at))
            .collect();
        let target_parked: HashMap<Uuid, crate::store::ParkedCommand> = all_parked(to, self.batch)
            .await?
            .into_iter()
            .map(|p| (p.scheduled.command.id, p))
            .collect();
        let stale: Vec<Uuid> = target_pending
            .keys()
            .chain(target_parked.keys())
            .filter(|id| !ids.contains(id))
            .copied()
            .collect();
        let scheduled = (pending.len() + parked.len()) as u64;
        // What the target lacks, and what changed in the source since the last run: a command
        // retried (due again at another time), parked, or parked again with another reason.
        let mut fresh = Vec::new();
        let mut moved = Vec::new();
        for command in &pending {
            let id = command.command.id;
            if target_parked.contains_key(&id) {
                to.retry_parked(id, command.due_at).await?;
            } else {
                match target_pending.get(&id) {
                    Some(due) if *due == command.due_at => {}
                    Some(_) => {
                        moved.push(id);
                        fresh.push(command.clone());
                    }
                    None => fresh.push(command.clone()),
                }
            }
        }
        for dead in &parked {
            let id = dead.scheduled.command.id;
            match (target_parked.get(&id), target_pending.get(&id)) {
                (Some(copy), _)
                    if copy.scheduled.due_at == dead.scheduled.due_at
                        && copy.reason == dead.reason
                        && copy.parked_at == dead.parked_at => {}
                (Some(_), _) => {
                    to.retry_parked(id, dead.scheduled.due_at).await?;
                }
                (None, Some(due)) if *due == dead.scheduled.due_at => {}
                (None, Some(_)) => {
                    moved.push(id);
                    fresh.push(dead.scheduled.clone());
                }
                (None, None) => fresh.push(dead.scheduled.clone()),
            }
        }
        if !moved.is_empty() {
            to.complete_scheduled(&moved).await?;
        }
        for page in fresh.chunks(self.batch) {
            // Scheduling an id the target has already leaves it as it is.
            to.schedule(page.to_vec()).await?;
        }
        for dead in &parked {
            // Parking a command parked already leaves it as it is. The target's copy was never
            // claimed: its attempts start again from zero.
            to.park(dead.scheduled.command.id, 0, &dead.reason, dead.parked_at)
                .await?;
        }
        if !stale.is_empty() {
            to.complete_scheduled(&stale).await?;
        }
        Ok((written, scheduled))
    }

    /// One stored event as the events it is today, with its metadata kept and backfilled.
    fn transform(&self, recorded: &RecordedEvent) -> Result<Vec<NewEvent>, MigrationError> {
        let fail = |source| MigrationError::Upcast {
            position: recorded.position,
            stream: recorded.stream.clone(),
            event_type: recorded.event_type.clone(),
            schema_version: recorded.schema_version,
            source,
        };
        let upcasted = if self
            .upcasters
            .has_upcaster(&recorded.event_type, recorded.schema_version)
        {
            let payload = recorded.payload.to_value().map_err(|e| fail(e.into()))?;
            self.upcasters
                .upcast(
                    Upcasted::new(
                        recorded.event_type.clone(),
                        recorded.schema_version,
                        payload,
                    ),
                    Some(&recorded.metadata),
                )
                .map_err(fail)?
                .into_iter()
                .map(|u| Ok((u.event_type, u.schema_version, Json::encode(&u.payload)?)))
                .collect::<Result<Vec<_>, serde_json::Error>>()
                .map_err(|e| fail(e.into()))?
        } else {
            vec![(
                recorded.event_type.clone(),
                recorded.schema_version,
                recorded.payload.clone(),
            )]
        };
        let mut metadata = recorded.metadata.clone();
        if let Some(backfill) = &self.backfill {
            backfill(recorded, &mut metadata);
        }
        metadata.headers.insert(
            SOURCE_POSITION.to_owned(),
            recorded.position.get().to_string(),
        );
        Ok(upcasted
            .into_iter()
            .enumerate()
            .map(|(i, (event_type, schema_version, payload))| {
                let mut metadata = metadata.clone();
                if i > 0 {
                    // A split's further events get ids derived from the original's, so a
                    // resumed run recognises them too.
                    metadata.event_id = Uuid::new_v5(&metadata.event_id, &(i as u64).to_be_bytes());
                }
                NewEvent {
                    event_type,
                    schema_version,
                    payload,
                    metadata,
                    tags: recorded.tags.clone(),
                }
            })
            .collect())
    }

    /// Checks that `to` holds exactly the prelude, then every event of `from` upcast (same
    /// ids, streams, types, versions and payloads), in the same order.
    ///
    /// # Errors
    ///
    /// As [`resume`](Self::resume), for an event that cannot be upcast or a failing store.
    pub async fn verify(
        &self,
        from: &dyn Storage,
        to: &dyn Storage,
    ) -> Result<Verification, MigrationError> {
        let mut found = Verification::default();
        let prelude_ids: HashSet<Uuid> = self
            .prelude
            .iter()
            .flat_map(|c| c.events.iter().map(|e| e.metadata.event_id))
            .collect();
        let mut target = Pages::new(to, self.batch);
        let mut source = Pages::new(from, self.batch);
        // The prelude comes first.
        while let Some(event) = target.peek().await? {
            if !prelude_ids.contains(&event.metadata.event_id) {
                break;
            }
            found.prelude += 1;
            target.next().await?;
        }
        while let Some(recorded) = source.next().await? {
            for expected in self.transform(&recorded)? {
                found.compared += 1;
                let Some(actual) = target.next().await? else {
                    found.missing += 1;
                    continue;
                };
                let same = actual.stream == recorded.stream
                    && actual.event_type == expected.event_type
                    && actual.schema_version == expected.schema_version
                    && actual.metadata.event_id == expected.metadata.event_id
                    && actual.payload.to_value().ok() == expected.payload.to_value().ok();
                if !same {
                    found.differ(format!(
                        "source position {} ({} {}): the target has {} {} v{} at position {}",
                        recorded.position,
                        recorded.stream,
                        expected.event_type,
                        actual.stream,
                        actual.event_type,
                        actual.schema_version,
                        actual.position
                    ));
                }
            }
        }
        if let Some(extra) = target.next().await? {
            found.differ(format!(
                "the target has more events than the source, from position {}",
                extra.position
            ));
        }
        self.verify_process_state(from, to, &mut found).await?;
        Ok(found)
    }

    async fn verify_process_state(
        &self,
        from: &dyn Storage,
        to: &dyn Storage,
        found: &mut Verification,
    ) -> Result<(), MigrationError> {
        let mut map: Option<PositionMap> = None;
        let mut after: Option<StreamId> = None;
        loop {
            let page = from.list_processes(after.as_ref(), self.batch).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            if map.is_none() {
                map = Some(PositionMap::read(to, self.batch).await?);
            }
            for process in page {
                found.processes += 1;
                let expected = map
                    .as_ref()
                    .map_or(Position::ZERO, |m| m.translate(process.last_position));
                match to.load_process(&process.id).await? {
                    None => found.differ(format!("process {} is missing", process.id)),
                    Some(copy)
                        if copy.state.to_value().ok() != process.state.to_value().ok()
                            || copy.completed != process.completed
                            || copy.last_position != expected =>
                    {
                        found.differ(format!("process {} differs", process.id));
                    }
                    Some(_) => {}
                }
            }
        }
        let key = |c: &crate::store::ScheduledCommand| {
            (
                c.command.id,
                c.command.target.clone(),
                c.command.command_type.clone(),
                c.command.payload.to_value().ok(),
                c.due_at,
            )
        };
        let (source, target) = (
            all_scheduled(from, self.batch).await?,
            all_scheduled(to, self.batch).await?,
        );
        let (source_parked, target_parked) = (
            all_parked(from, self.batch).await?,
            all_parked(to, self.batch).await?,
        );
        found.scheduled = (source.len() + source_parked.len()) as u64;
        let target: HashSet<_> = target.iter().map(key).collect();
        for command in &source {
            if !target.contains(&key(command)) {
                found.differ(format!(
                    "scheduled command {} is missing",
                    command.command.id
                ));
            }
        }
        let target_parked: HashSet<_> = target_parked
            .iter()
            .map(|p| (key(&p.scheduled), p.reason.clone()))
            .collect();
        for dead in &source_parked {
            if !target_parked.contains(&(key(&dead.scheduled), dead.reason.clone())) {
                found.differ(format!(
                    "parked command {} is missing",
                    dead.scheduled.command.id
                ));
            }
        }
        Ok(())
    }
}

/// Appends to the target, stream by stream, recognising what a resumed run wrote before.
struct Writer<'a> {
    to: &'a dyn Storage,
    resuming: bool,
    versions: HashMap<StreamId, Version>,
    present: HashMap<StreamId, HashSet<Uuid>>,
    written: u64,
    skipped: u64,
}

impl Writer<'_> {
    /// What the target already holds of `stream` (a resumed run), read once.
    async fn learn(&mut self, stream: &StreamId) -> Result<(), MigrationError> {
        if self.versions.contains_key(stream) {
            return Ok(());
        }
        let existing = if self.resuming {
            self.to.read_stream(stream, Version::START).await?
        } else {
            Vec::new()
        };
        self.versions.insert(
            stream.clone(),
            existing.last().map_or(Version::ZERO, |e| e.version),
        );
        if !existing.is_empty() {
            self.present.insert(
                stream.clone(),
                existing.iter().map(|e| e.metadata.event_id).collect(),
            );
        }
        Ok(())
    }

    /// Appends each stream's events, in order, skipping what the target has already; returns
    /// the position of the last event written of each (`None`: nothing written).
    async fn write_all(
        &mut self,
        batch: Vec<(StreamId, Vec<NewEvent>)>,
    ) -> Result<Vec<Option<Position>>, MigrationError> {
        let mut commits = Vec::with_capacity(batch.len());
        let mut slots = Vec::with_capacity(batch.len());
        let mut versions: HashMap<StreamId, Version> = HashMap::new();
        for (stream, mut events) in batch {
            self.learn(&stream).await?;
            if let Some(present) = self.present.get(&stream) {
                let before = events.len();
                events.retain(|e| !present.contains(&e.metadata.event_id));
                self.skipped += (before - events.len()) as u64;
            }
            if events.is_empty() {
                slots.push(None);
                continue;
            }
            let version = versions
                .get(&stream)
                .copied()
                .unwrap_or(self.versions[&stream]);
            let expected = if version == Version::ZERO {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            versions.insert(
                stream.clone(),
                Version::new(version.get() + events.len() as u64),
            );
            slots.push(Some(commits.len()));
            commits.push(Commit::new(stream, expected, events));
        }
        let count: u64 = commits.iter().map(|c| c.events.len() as u64).sum();
        if commits.is_empty() {
            return Ok(vec![None; slots.len()]);
        }
        let appended = match self.to.commit_in_order(commits).await {
            Ok(appended) => appended,
            Err(StoreError::Conflict { stream, actual, .. }) => {
                return Err(MigrationError::Diverged {
                    stream,
                    version: actual,
                });
            }
            Err(err) => return Err(err.into()),
        };
        self.versions.extend(versions);
        self.written += count;
        Ok(slots
            .into_iter()
            .map(|slot| slot.and_then(|i| appended.get(i).and_then(|a| a.position)))
            .collect())
    }
}

async fn all_scheduled(
    store: &dyn Storage,
    batch: usize,
) -> Result<Vec<crate::store::ScheduledCommand>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_scheduled(after, batch).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.command.id);
        all.extend(page);
    }
    Ok(all)
}

async fn all_parked(
    store: &dyn Storage,
    batch: usize,
) -> Result<Vec<crate::store::ParkedCommand>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_parked(after, batch).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.scheduled.command.id);
        all.extend(page);
    }
    Ok(all)
}

/// Source positions to target positions, read back from the target's
/// [`SOURCE_POSITION`] headers (and kept between runs, so each run reads only what is new).
#[derive(Debug, Default)]
struct PositionMap {
    /// (source, target), by source position.
    pairs: Vec<(u64, u64)>,
    /// The target position the prelude ends at.
    prelude_end: u64,
    /// How far the target has been read.
    read_to: Position,
}

impl PositionMap {
    async fn read(to: &dyn Storage, batch: usize) -> Result<Self, StoreError> {
        let mut map = Self::default();
        map.extend(to, batch).await?;
        Ok(map)
    }

    /// Reads the target's events written since the last read.
    async fn extend(&mut self, to: &dyn Storage, batch: usize) -> Result<(), StoreError> {
        let mut pages = Pages::new(to, batch);
        pages.next = self.read_to.next();
        while let Some(event) = pages.next().await? {
            self.read_to = event.position;
            match event
                .metadata
                .headers
                .get(SOURCE_POSITION)
                .and_then(|p| p.parse::<u64>().ok())
            {
                Some(source) => self.pairs.push((source, event.position.get())),
                None if self.pairs.is_empty() => self.prelude_end = event.position.get(),
                None => {}
            }
        }
        Ok(())
    }

    /// The target position of the last event copied from at or before `source`.
    fn translate(&self, source: Position) -> Position {
        if source == Position::ZERO {
            return Position::ZERO;
        }
        let after = self.pairs.partition_point(|(s, _)| *s <= source.get());
        Position::new(
            after
                .checked_sub(1)
                .map_or(self.prelude_end, |i| self.pairs[i].1.max(self.prelude_end)),
        )
    }
}

/// The global log, page by page, with one event of look-ahead.
struct Pages<'a> {
    store: &'a dyn Storage,
    batch: usize,
    next: Position,
    buffer: std::collections::VecDeque<RecordedEvent>,
    end: bool,
}

impl<'a> Pages<'a> {
    fn new(store: &'a dyn Storage, batch: usize) -> Self {
        Self {
            store,
            batch,
            next: Position::START,
            buffer: std::collections::VecDeque::new(),
            end: false,
        }
    }

    async fn fill(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() && !self.end {
            let page = self.store.read_all(self.next, self.batch).await?;
            match page.last() {
                Some(last) => self.next = last.position.next(),
                None => self.end = true,
            }
            self.buffer.extend(page);
        }
        Ok(())
    }

    async fn peek(&mut self) -> Result<Option<&RecordedEvent>, StoreError> {
        self.fill().await?;
        Ok(self.buffer.front())
    }

    async fn next(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        self.fill().await?;
        Ok(self.buffer.pop_front())
    }
}
