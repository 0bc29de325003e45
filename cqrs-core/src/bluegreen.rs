//! Blue/green read models: a new version of an in-memory read model is built beside the live
//! one, from position 0, while the live one keeps serving; once it has caught up, readers
//! switch to it atomically, and the old one is retired.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::projection::{
    MemoryProjection, Projection, ProjectionError, ProjectionHandle, ProjectionRunner,
    ProjectionStatus, RunnerStopped,
};
use crate::store::EventReader;
use crate::version::Position;

/// Where a [`BlueGreen`] read model stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlueGreenStatus {
    /// The read model's name.
    pub name: String,
    /// The version readers see, and how far it has read.
    pub live: ProjectionStatus,
    /// The version being built beside it, if any, and how far it has read.
    pub building: Option<ProjectionStatus>,
    /// The log's head when the status was taken, to measure progress against.
    pub head: Position,
    /// Versions retired so far, oldest first.
    pub retired: Vec<String>,
}

struct Slot<S> {
    projection: Arc<MemoryProjection<S>>,
    handle: Option<ProjectionHandle>,
    /// The metrics label of a rebuild's runner, dropped when it goes live.
    label: Option<Arc<RwLock<Option<String>>>>,
}

impl<S: Clone + Send + Sync + 'static> Slot<S> {
    fn status(&self) -> ProjectionStatus {
        self.handle
            .as_ref()
            .map_or_else(|| idle_status(&*self.projection), ProjectionHandle::status)
    }
}

fn idle_status(projection: &dyn Projection) -> ProjectionStatus {
    ProjectionStatus {
        key: projection.key(),
        position: Position::ZERO,
        live: false,
        last_error: None,
    }
}

struct Inner<S> {
    live: RwLock<Slot<S>>,
    building: Mutex<Option<Slot<S>>>,
    retired: Mutex<Vec<String>>,
    running: Mutex<bool>,
}

/// An in-memory read model whose version can be replaced with no pause for readers.
///
/// [`read`](Self::read) always reads the live version. [`upgrade`](Self::upgrade) starts
/// building the next version from position 0 beside it; the switch happens once the new
/// version has read at least as far as the live one, under a write lock, so a reader never
/// sees a state older than one it saw before. The old version's runner is then stopped.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{BlueGreen, EventStore, ExpectedVersion, InMemoryEventStore, Json, MemoryProjection, NewEvent, StreamId};
///
/// # tokio_test::block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// store.append(&StreamId::new("s-1")?, ExpectedVersion::Any, vec![NewEvent::new("e", Json::null())]).await?;
///
/// // Version 1 counts events; version 2 counts them twice.
/// let count = BlueGreen::new(store.clone(), MemoryProjection::new("count", 0u64, |n, _| { *n += 1; Ok(()) }));
/// count.catch_up().await?;
/// assert_eq!(count.read(|n| *n), 1);
///
/// count.upgrade(MemoryProjection::new("count", 0u64, |n, _| { *n += 2; Ok(()) }).with_version(2))?;
/// count.catch_up().await?; // builds the new version and switches to it
/// assert_eq!(count.read(|n| *n), 2);
/// assert_eq!(count.status().live.key, "count@v2");
/// assert_eq!(count.status().retired, ["count@v1"]);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub struct BlueGreen<S> {
    reader: Arc<dyn EventReader>,
    inner: Arc<Inner<S>>,
}

impl<S> Clone for BlueGreen<S> {
    fn clone(&self) -> Self {
        Self {
            reader: Arc::clone(&self.reader),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> fmt::Debug for BlueGreen<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlueGreen").finish_non_exhaustive()
    }
}

/// How often a background upgrade checks whether the new version has caught up.
const SWITCH_POLL: Duration = Duration::from_millis(5);

impl<S: Clone + Send + Sync + 'static> BlueGreen<S> {
    /// `projection`, live, fed from `reader`.
    #[must_use]
    pub fn new(reader: Arc<dyn EventReader>, projection: MemoryProjection<S>) -> Self {
        Self {
            reader,
            inner: Arc::new(Inner {
                live: RwLock::new(Slot {
                    projection: Arc::new(projection),
                    handle: None,
                    label: None,
                }),
                building: Mutex::new(None),
                retired: Mutex::new(Vec::new()),
                running: Mutex::new(false),
            }),
        }
    }

    /// Reads the live version.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        let live = self
            .inner
            .live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.projection.read(f)
    }

    /// The live version's key (`name@vN`).
    #[must_use]
    pub fn live_key(&self) -> String {
        self.inner
            .live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .projection
            .key()
    }

    /// Where the live version and the one being built stand.
    #[must_use]
    pub fn status(&self) -> BlueGreenStatus {
        let live = self
            .inner
            .live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let building = self
            .inner
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        BlueGreenStatus {
            name: live.projection.name().to_owned(),
            live: live.status(),
            building: building.as_ref().map(Slot::status),
            head: Position::ZERO,
            retired: self
                .inner
                .retired
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// [`status`](Self::status) with the log's head filled in.
    ///
    /// # Errors
    ///
    /// The store's error reading the head.
    pub async fn status_with_head(&self) -> Result<BlueGreenStatus, ProjectionError> {
        let mut status = self.status();
        status.head = self.reader.head().await?;
        Ok(status)
    }

    /// Applies everything in the log now to the live version and to the one being built, and
    /// switches to the new one if it has caught up: for step-by-step use (tests, tools).
    ///
    /// # Errors
    ///
    /// The first [`ProjectionError`].
    pub async fn catch_up(&self) -> Result<Position, ProjectionError> {
        let live = self.live_projection();
        let reached = ProjectionRunner::new(Arc::clone(&self.reader), live)
            .catch_up()
            .await?;
        let building = self
            .inner
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|slot| Arc::clone(&slot.projection));
        if let Some(next) = building {
            self.building_runner(next).catch_up().await?;
            self.try_switch(Some(reached)).await?;
        }
        Ok(reached)
    }

    fn live_projection(&self) -> Arc<MemoryProjection<S>> {
        Arc::clone(
            &self
                .inner
                .live
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .projection,
        )
    }

    /// Runs the live version (and one being built) in the background, following the log.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub fn start(&self) {
        *self
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        let mut live = self
            .inner
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live.handle.is_none() {
            live.handle = Some(
                ProjectionRunner::new(Arc::clone(&self.reader), live.projection.clone()).spawn(),
            );
        }
        drop(live);
        let needs_runner = self
            .inner
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|slot| slot.handle.is_none());
        if needs_runner {
            self.spawn_building();
        }
    }

    /// Waits until the live version, running in the background ([`start`](Self::start)), has
    /// applied the log up to `position`: read-your-writes for a command that committed at
    /// `position`. It follows a switch to a new version while it waits.
    ///
    /// # Errors
    ///
    /// [`RunnerStopped`] if the read model is not running, or stops first.
    pub async fn wait_for(&self, position: Position) -> Result<(), RunnerStopped> {
        loop {
            let (key, watch) = {
                let live = self
                    .inner
                    .live
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (
                    live.projection.key(),
                    live.handle.as_ref().map(ProjectionHandle::watch),
                )
            };
            let mut watch = watch.ok_or(RunnerStopped)?;
            if watch.wait_for(|s| s.position >= position).await.is_ok() {
                return Ok(());
            }
            if self.live_key() == key {
                return Err(RunnerStopped);
            }
        }
    }

    /// Stops the background runners, letting each finish its batch.
    pub async fn stop(&self) {
        *self
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        let live = self
            .inner
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .handle
            .take();
        let building = self
            .inner
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
            .and_then(|slot| slot.handle.take());
        for handle in live.into_iter().chain(building) {
            handle.stop().await;
        }
    }

    /// Starts building `next` beside the live version, from position 0. When running in the
    /// background ([`start`](Self::start)), it switches by itself once `next` has caught up;
    /// step by step, [`catch_up`](Self::catch_up) builds and switches.
    ///
    /// # Errors
    ///
    /// If `next` has the live version's key (a new version needs a new
    /// [`MemoryProjection::with_version`]), or another version is being built.
    pub fn upgrade(&self, next: MemoryProjection<S>) -> Result<(), ProjectionError> {
        if next.key() == self.live_key() {
            return Err(ProjectionError::new(format!(
                "{} is live already: give the new version another number",
                next.key()
            )));
        }
        self.build_beside(next)
    }

    /// Builds `fresh`, a new instance of the live version (the same key), beside it from
    /// position 0, and switches to it once it has caught up, as [`upgrade`](Self::upgrade)
    /// does: for a read model that must be built again without a new version (its code was
    /// fixed, or an operator wants to see it rebuilt). Readers keep the live one meanwhile.
    /// While it runs, the rebuilt copy's metrics carry the key with ` (rebuild)` after it.
    ///
    /// # Errors
    ///
    /// If `fresh` is not the live version (use [`upgrade`](Self::upgrade)), or another
    /// version is being built.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cqrs_core::{BlueGreen, EventStore, ExpectedVersion, InMemoryEventStore, Json, MemoryProjection, NewEvent};
    /// # tokio_test::block_on(async {
    /// let store = Arc::new(InMemoryEventStore::new());
    /// store.append(&"order-1".parse()?, ExpectedVersion::Any, vec![NewEvent::new("e", Json::null())]).await?;
    /// let count = || MemoryProjection::new("count", 0u64, |n, _| { *n += 1; Ok(()) });
    /// let read_model = BlueGreen::new(store.clone(), count());
    /// read_model.catch_up().await?;
    /// read_model.rebuild(count())?;
    /// read_model.catch_up().await?;
    /// assert_eq!(read_model.read(|n| *n), 1);
    /// assert_eq!(read_model.status().retired, ["count@v1"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub fn rebuild(&self, fresh: MemoryProjection<S>) -> Result<(), ProjectionError> {
        if fresh.key() != self.live_key() {
            return Err(ProjectionError::new(format!(
                "{} is not the live version ({}): upgrade to it instead",
                fresh.key(),
                self.live_key()
            )));
        }
        self.build_beside(fresh)
    }

    fn build_beside(&self, next: MemoryProjection<S>) -> Result<(), ProjectionError> {
        {
            let mut building = self
                .inner
                .building
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(slot) = building.as_ref() {
                return Err(ProjectionError::new(format!(
                    "{} is being built already",
                    slot.projection.key()
                )));
            }
            *building = Some(Slot {
                projection: Arc::new(next),
                handle: None,
                label: None,
            });
        }
        if *self
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            self.spawn_building();
        }
        Ok(())
    }

    /// The runner of a version being built: a rebuild of the live version reports its metrics
    /// under its own label, not the live one's.
    fn building_runner(&self, next: Arc<MemoryProjection<S>>) -> ProjectionRunner {
        let key = next.key();
        let runner = ProjectionRunner::new(Arc::clone(&self.reader), next);
        if key == self.live_key() {
            runner.with_metrics_label(format!("{key} (rebuild)"))
        } else {
            runner
        }
    }

    /// Runs the version being built and switches to it once it has caught up.
    fn spawn_building(&self) {
        let mut building = self
            .inner
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(slot) = building.as_mut() else {
            return;
        };
        let runner = self.building_runner(slot.projection.clone());
        slot.label = Some(runner.metrics_label_cell());
        let handle = runner.spawn();
        let mut watch = handle.watch();
        slot.handle = Some(handle);
        drop(building);
        let this = self.clone();
        tokio::spawn(async move {
            // Wait until it follows the log live, then switch as soon as it has read as far
            // as the live version.
            if watch.wait_for(|s| s.live).await.is_err() {
                return;
            }
            loop {
                match this.try_switch(None).await {
                    Ok(true) => return,
                    Ok(false) => tokio::time::sleep(SWITCH_POLL).await,
                    Err(err) => {
                        tracing::warn!(error = %crate::ErrorChain(&err), "blue/green: cannot switch yet");
                        tokio::time::sleep(SWITCH_POLL * 20).await;
                    }
                }
                let still_building = this
                    .inner
                    .building
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some();
                if !still_building {
                    return;
                }
            }
        });
    }

    /// Switches to the version being built if it has read at least as far as the live one
    /// (or `at_least`); returns whether it switched.
    async fn try_switch(&self, at_least: Option<Position>) -> Result<bool, ProjectionError> {
        let retired = {
            let mut live = self
                .inner
                .live
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut building = self
                .inner
                .building
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(next) = building.as_ref() else {
                return Ok(false);
            };
            let live_at = position_of(&live).max(at_least.unwrap_or(Position::ZERO));
            if position_of(next) < live_at {
                return Ok(false);
            }
            let Some(next) = building.take() else {
                return Ok(false);
            };
            let old = std::mem::replace(&mut *live, next);
            // A rebuild's runner now reports as the version it replaced.
            if let Some(label) = &live.label {
                *label
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            }
            tracing::info!(
                from = %old.projection.key(),
                to = %live.projection.key(),
                "blue/green: switched"
            );
            old
        };
        self.inner
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(retired.projection.key());
        if let Some(handle) = retired.handle {
            handle.stop().await;
        }
        Ok(true)
    }
}

/// How far a slot's projection has applied the log (its own checkpoint, which moves with its
/// state under one lock).
fn position_of<S: Clone + Send + Sync + 'static>(slot: &Slot<S>) -> Position {
    slot.projection.applied().unwrap_or(Position::ZERO)
}
