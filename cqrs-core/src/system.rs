//! One way to wire an application: storage, clock, upcasters and the dispatch waker given
//! once, and every repository, process manager and read model handed out already wired.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::aggregate::Aggregate;
use crate::bluegreen::BlueGreen;
use crate::clock::{Clock, SystemClock};
use crate::decision::{Decider, Decision};
use crate::process::{
    CommandDispatcher, CommandHandler, CommandRouter, DispatchWaker, DispatcherHandle,
    ProcessManager, ProcessManagerRunner,
};
use crate::projection::{
    MemoryProjection, Projection, ProjectionError, ProjectionHandle, ProjectionRunner,
    RunnerStopped,
};
use crate::repository::Repository;
use crate::store::{EventReader, Storage, StoreError};
use crate::upcast::Upcasters;
use crate::version::Position;

/// An application's parts on one storage, wired once.
///
/// The storage, the [`Clock`], the [`Upcasters`] and the dispatch waker are given once to the
/// [builder](System::builder); everything the system hands out carries them:
/// [repositories](System::repository) (routed, so that scheduled commands for their streams
/// reach them), [process managers](System::process_manager) (routed, and run as the log
/// grows), [projections](System::projection) and [blue/green read models](System::blue_green)
/// (run as the log grows), and the [`CommandDispatcher`] that delivers timeouts and outboxes.
/// Forgetting the clock on one part, the upcasters on another or the waker on a third cannot
/// happen. The parts built by hand stay available for what this does not cover.
///
/// Drive it step by step with [`settle`](Self::settle) (tests, demos, tools), or in the
/// background with [`spawn`](Self::spawn) (servers). Cheap to clone: clones share the parts.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{Aggregate, ApplyError, DomainEvent, InMemoryEventStore, MemoryProjection, System};
/// use serde::{Deserialize, Serialize};
///
/// # #[derive(Debug, Clone)] struct Seats { available: u32 }
/// # #[derive(Debug, Serialize, Deserialize)] enum SeatsCommand { #[serde(rename = "seats.add")] Add { quantity: u32 } }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] enum SeatsEvent { #[serde(rename = "seats.added")] Added { quantity: u32 } }
/// # impl DomainEvent for SeatsEvent {}
/// # #[derive(Debug, PartialEq, thiserror::Error, Serialize, Deserialize)] #[error("never")] struct Never;
/// # impl Aggregate for Seats {
/// #     const TYPE: &'static str = "seats";
/// #     type Id = String; type Command = SeatsCommand; type Event = SeatsEvent; type Error = Never;
/// #     fn handle(_: Option<&Self>, _: &String, c: SeatsCommand) -> Result<Vec<SeatsEvent>, Never> {
/// #         let SeatsCommand::Add { quantity } = c; Ok(vec![SeatsEvent::Added { quantity }]) }
/// #     fn apply(s: Option<Self>, e: &SeatsEvent) -> Result<Self, ApplyError> {
/// #         let SeatsEvent::Added { quantity } = e; Ok(Seats { available: s.map_or(0, |s| s.available) + quantity }) }
/// # }
/// # tokio_test::block_on(async {
/// let system = System::builder(Arc::new(InMemoryEventStore::new())).build();
/// let seats = system.repository::<Seats>();
/// let total = system.blue_green(MemoryProjection::new("total", 0_u32, |n: &mut u32, _event| {
///     *n += 1;
///     Ok(())
/// }));
///
/// seats.handle(&"devconf".to_owned(), SeatsCommand::Add { quantity: 10 }).await?;
/// system.settle().await?;
/// assert_eq!(total.read(|n| *n), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct System {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    upcasters: Upcasters,
    waker: DispatchWaker,
    configure_dispatcher: Box<dyn Fn(CommandDispatcher) -> CommandDispatcher + Send + Sync>,
    parts: Mutex<Parts>,
}

#[derive(Default)]
struct Parts {
    /// Repositories and process-manager runners by their type, to hand out the same one again.
    by_type: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    /// What scheduled commands are delivered to, by stream category.
    routes: Vec<(String, Arc<dyn CommandHandler>)>,
    /// Process managers and projections, run as the log grows.
    runners: Vec<ProjectionRunner>,
    /// Blue/green read models, run as the log grows.
    read_models: Vec<Arc<dyn ReadModel>>,
    /// The dispatcher, built once the routes are known (the first settle or spawn).
    dispatcher: Option<CommandDispatcher>,
    /// Whether the parts run in the background.
    running: bool,
}

/// A [`BlueGreen`] of any state, as the system drives it.
#[async_trait]
trait ReadModel: Send + Sync {
    async fn catch_up(&self) -> Result<Position, ProjectionError>;
    fn start(&self);
    async fn stop(&self);
    async fn wait_for(&self, position: Position) -> Result<(), RunnerStopped>;
}

#[async_trait]
impl<S: Clone + Send + Sync + 'static> ReadModel for BlueGreen<S> {
    async fn catch_up(&self) -> Result<Position, ProjectionError> {
        BlueGreen::catch_up(self).await
    }

    fn start(&self) {
        BlueGreen::start(self);
    }

    async fn stop(&self) {
        BlueGreen::stop(self).await;
    }

    async fn wait_for(&self, position: Position) -> Result<(), RunnerStopped> {
        BlueGreen::wait_for(self, position).await
    }
}

impl fmt::Debug for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.parts();
        f.debug_struct("System")
            .field("upcasters", &self.inner.upcasters)
            .field(
                "routes",
                &parts
                    .routes
                    .iter()
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("runners", &parts.runners.len())
            .field("read_models", &parts.read_models.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`System`]: what every part shares, given once.
#[must_use]
pub struct SystemBuilder {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    upcasters: Upcasters,
    configure_dispatcher: Box<dyn Fn(CommandDispatcher) -> CommandDispatcher + Send + Sync>,
}

impl fmt::Debug for SystemBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemBuilder")
            .field("upcasters", &self.upcasters)
            .finish_non_exhaustive()
    }
}

impl SystemBuilder {
    /// Time for every part: command records, event times, timeouts ([`SystemClock`] by
    /// default; a [`ManualClock`](crate::ManualClock) in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The upcasters every part decodes stored events through (none by default).
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Tunes the dispatcher (lease, idle poll, attempts); the system has given it the
    /// storage, the routes, the clock and the waker already.
    pub fn dispatcher(
        mut self,
        configure: impl Fn(CommandDispatcher) -> CommandDispatcher + Send + Sync + 'static,
    ) -> Self {
        self.configure_dispatcher = Box::new(configure);
        self
    }

    /// The system, with no parts yet: ask it for them.
    pub fn build(self) -> System {
        System {
            inner: Arc::new(Inner {
                storage: self.storage,
                clock: self.clock,
                upcasters: self.upcasters,
                waker: DispatchWaker::new(),
                configure_dispatcher: self.configure_dispatcher,
                parts: Mutex::default(),
            }),
        }
    }
}

/// Why [`System::settle`] could not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A process manager, projection or read model failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// Committed events did not become deliverable in time (on PostgreSQL, a transaction that
    /// began before them is held open).
    #[error("events up to position {committed} are committed but not deliverable after {waited:?}")]
    NotDeliverable {
        /// The last committed position.
        committed: Position,
        /// How long it waited.
        waited: Duration,
    },
    /// The parts kept sending each other commands without coming to rest.
    #[error("the system did not come to rest after {rounds} rounds")]
    NoRest {
        /// How many rounds of catching up and delivering it ran.
        rounds: usize,
    },
}

/// How long [`System::settle`] waits for committed events to become deliverable.
const DELIVERABLE_WITHIN: Duration = Duration::from_secs(10);

/// The most rounds of [`System::settle`]: only parts that command each other for ever need more.
const MAX_ROUNDS: usize = 10_000;

impl System {
    /// A builder for a system on `storage`.
    pub fn builder(storage: Arc<dyn Storage>) -> SystemBuilder {
        SystemBuilder {
            storage,
            clock: Arc::new(SystemClock),
            upcasters: Upcasters::new(),
            configure_dispatcher: Box::new(|dispatcher| dispatcher),
        }
    }

    /// The storage.
    #[must_use]
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The upcasters, for read models that decode events themselves.
    #[must_use]
    pub fn upcasters(&self) -> &Upcasters {
        &self.inner.upcasters
    }

    fn parts(&self) -> MutexGuard<'_, Parts> {
        self.inner
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reader(&self) -> Arc<dyn EventReader> {
        Arc::clone(&self.inner.storage) as Arc<dyn EventReader>
    }

    /// The repository of `A`, wired (storage, clock, upcasters) and routed (scheduled commands
    /// for `A`'s streams reach it). Every call returns the same one (clones share everything).
    /// Asking for it registers it, so a repository only other parts command can be asked for
    /// and dropped.
    pub fn repository<A: Aggregate>(&self) -> Repository<A> {
        self.repository_with(|repository| repository)
    }

    /// [`repository`](Self::repository), configured by `configure` (snapshots, a cache,
    /// attempts) the first time it is asked for; later calls return that one and do not call
    /// `configure`.
    ///
    /// # Panics
    ///
    /// Panics if the system is already running ([`spawn`](Self::spawn)ed or settled): the
    /// dispatcher's routes are fixed by then.
    pub fn repository_with<A: Aggregate>(
        &self,
        configure: impl FnOnce(Repository<A>) -> Repository<A>,
    ) -> Repository<A> {
        let mut parts = self.parts();
        if let Some(found) = parts.by_type.get(&TypeId::of::<Repository<A>>()) {
            return found
                .downcast_ref::<Repository<A>>()
                .expect("stored by its own type")
                .clone();
        }
        let repository = configure(
            Repository::<A>::new(Arc::clone(&self.inner.storage))
                .with_clock(Arc::clone(&self.inner.clock))
                .with_upcasters(self.inner.upcasters.clone()),
        );
        parts.route(A::TYPE, Arc::new(repository.clone()));
        parts
            .by_type
            .insert(TypeId::of::<Repository<A>>(), Box::new(repository.clone()));
        repository
    }

    /// A [`Decider`] for the decision `D`, wired (storage, clock, upcasters). Deciders hold
    /// nothing of their own: each call returns a new one, and clones share the system's parts.
    pub fn decider<D: Decision>(&self) -> Decider<D> {
        Decider::new(Arc::clone(&self.inner.storage))
            .with_clock(Arc::clone(&self.inner.clock))
            .with_upcasters(self.inner.upcasters.clone())
    }

    /// The runner of the process manager `P`, wired (storage, clock, upcasters, waker),
    /// routed (its timeouts reach it) and run as the log grows. Every call returns the same
    /// one (dropping it leaves it registered).
    ///
    /// # Panics
    ///
    /// As [`repository_with`](Self::repository_with).
    pub fn process_manager<P: ProcessManager>(&self) -> ProcessManagerRunner<P> {
        let mut parts = self.parts();
        if let Some(found) = parts.by_type.get(&TypeId::of::<ProcessManagerRunner<P>>()) {
            return found
                .downcast_ref::<ProcessManagerRunner<P>>()
                .expect("stored by its own type")
                .clone();
        }
        let runner = ProcessManagerRunner::<P>::new(Arc::clone(&self.inner.storage))
            .with_clock(Arc::clone(&self.inner.clock))
            .with_upcasters(self.inner.upcasters.clone())
            .with_waker(self.inner.waker.clone());
        parts.route(P::NAME, Arc::new(runner.clone()));
        parts.runners.push(ProjectionRunner::new(
            self.reader(),
            Arc::new(runner.clone()),
        ));
        parts.by_type.insert(
            TypeId::of::<ProcessManagerRunner<P>>(),
            Box::new(runner.clone()),
        );
        runner
    }

    /// Runs `projection` as the log grows (with [`settle`](Self::settle) or
    /// [`spawn`](Self::spawn)); the runner is returned for rebuilds and status.
    ///
    /// # Panics
    ///
    /// Panics if the system was already [`spawn`](Self::spawn)ed.
    pub fn projection(&self, projection: Arc<dyn Projection>) -> ProjectionRunner {
        let runner = ProjectionRunner::new(self.reader(), projection);
        let mut parts = self.parts();
        parts.assert_not_running();
        parts.runners.push(runner.clone());
        runner
    }

    /// `projection` as a [`BlueGreen`] read model (its next version can be built beside it),
    /// run as the log grows.
    ///
    /// # Panics
    ///
    /// As [`projection`](Self::projection).
    pub fn blue_green<S: Clone + Send + Sync + 'static>(
        &self,
        projection: MemoryProjection<S>,
    ) -> BlueGreen<S> {
        let read_model = BlueGreen::new(self.reader(), projection);
        let mut parts = self.parts();
        parts.assert_not_running();
        parts.read_models.push(Arc::new(read_model.clone()));
        read_model
    }

    /// The dispatcher: it delivers due scheduled commands to the routed repositories and
    /// process managers. Built once, at the first call (or [`settle`](Self::settle) or
    /// [`spawn`](Self::spawn)); ask for every part before.
    #[must_use]
    pub fn dispatcher(&self) -> CommandDispatcher {
        let mut parts = self.parts();
        if let Some(dispatcher) = &parts.dispatcher {
            return dispatcher.clone();
        }
        let router = parts
            .routes
            .iter()
            .fold(CommandRouter::new(), |router, (category, handler)| {
                router.route(category.clone(), Arc::clone(handler))
            });
        let dispatcher = (self.inner.configure_dispatcher)(
            CommandDispatcher::new(Arc::clone(&self.inner.storage), Arc::new(router))
                .with_clock(Arc::clone(&self.inner.clock))
                .with_waker(self.inner.waker.clone()),
        );
        parts.dispatcher = Some(dispatcher.clone());
        dispatcher
    }

    /// Runs every process manager, projection and read model, and delivers the scheduled
    /// commands that are due, until nothing is left to do now: after it returns, every part has
    /// seen every event committed before the call and every effect of those (timeouts fall due
    /// only when the clock reaches them). For tests, demos and tools; a server
    /// [`spawn`](Self::spawn)s instead.
    ///
    /// # Errors
    ///
    /// [`SettleError`]: the store or a part failed, committed events did not become
    /// deliverable, or the parts never came to rest.
    ///
    /// On a [`spawn`](Self::spawn)ed system it runs the same steps beside the background tasks,
    /// which the parts tolerate (claims are leased, projections skip what they have applied,
    /// process managers what they have handled); [`Running::wait_for`] is the lighter way to
    /// wait for one command's effects there.
    pub async fn settle(&self) -> Result<(), SettleError> {
        let dispatcher = self.dispatcher();
        let (runners, read_models) = {
            let parts = self.parts();
            (parts.runners.clone(), parts.read_models.clone())
        };
        for _ in 0..MAX_ROUNDS {
            self.await_deliverable().await?;
            for runner in &runners {
                runner.catch_up().await?;
            }
            for read_model in &read_models {
                read_model.catch_up().await?;
            }
            if dispatcher.run_due().await? == 0 {
                return Ok(());
            }
        }
        Err(SettleError::NoRest { rounds: MAX_ROUNDS })
    }

    /// Waits until every event committed so far can be delivered (on PostgreSQL, until every
    /// older transaction has ended).
    async fn await_deliverable(&self) -> Result<(), SettleError> {
        let storage = &self.inner.storage;
        let committed = storage.last_committed().await?;
        let deadline = tokio::time::Instant::now() + DELIVERABLE_WITHIN;
        while storage.head().await? < committed {
            if tokio::time::Instant::now() > deadline {
                return Err(SettleError::NotDeliverable {
                    committed,
                    waited: DELIVERABLE_WITHIN,
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Runs every process manager, projection and read model, and the dispatcher, in the
    /// background, following the log live. Stop them with [`Running::stop`].
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime, or if the system is running already.
    #[must_use = "the parts stop only through Running::stop"]
    pub fn spawn(&self) -> Running {
        let dispatcher = self.dispatcher();
        let mut parts = self.parts();
        parts.assert_not_running();
        parts.running = true;
        let projections = parts
            .runners
            .iter()
            .cloned()
            .map(ProjectionRunner::spawn)
            .collect();
        for read_model in &parts.read_models {
            read_model.start();
        }
        Running {
            projections,
            read_models: parts.read_models.clone(),
            dispatcher: Some(dispatcher.spawn()),
            system: self.clone(),
        }
    }
}

impl Parts {
    fn route(&mut self, category: &str, handler: Arc<dyn CommandHandler>) {
        assert!(
            self.dispatcher.is_none(),
            "ask the system for every repository and process manager before it settles or \
             spawns: the dispatcher's routes are fixed by then ({category} came late)"
        );
        self.routes.push((category.to_owned(), handler));
    }

    fn assert_not_running(&self) {
        assert!(
            !self.running,
            "the system is running already: stop it (Running::stop) first"
        );
    }
}

/// The background tasks of a [`System::spawn`]ed system.
pub struct Running {
    projections: Vec<ProjectionHandle>,
    read_models: Vec<Arc<dyn ReadModel>>,
    dispatcher: Option<DispatcherHandle>,
    system: System,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("projections", &self.projections.len())
            .field("read_models", &self.read_models.len())
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Waits until every process manager, projection and read model has applied the log up to
    /// `position`: read-your-writes for a command that committed at `position` (see
    /// [`Handled::position`](crate::Handled::position)), without polling. Wrap it in a timeout
    /// where the caller must not wait for long.
    ///
    /// # Errors
    ///
    /// [`RunnerStopped`] if a part stopped first.
    pub async fn wait_for(&self, position: Position) -> Result<(), RunnerStopped> {
        for projection in &self.projections {
            projection.wait_for(position).await?;
        }
        for read_model in &self.read_models {
            read_model.wait_for(position).await?;
        }
        Ok(())
    }

    /// The projections' handles, in the order the system was given them (process managers
    /// first among them as they were asked for), for their status.
    #[must_use]
    pub fn projections(&self) -> &[ProjectionHandle] {
        &self.projections
    }

    /// Stops the dispatcher, then every projection and read model, letting each finish what
    /// it is doing; the system can then be settled or spawned again.
    pub async fn stop(mut self) {
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.stop().await;
        }
        for projection in &self.projections {
            projection.stop().await;
        }
        for read_model in &self.read_models {
            read_model.stop().await;
        }
        self.system.parts().running = false;
    }
}
