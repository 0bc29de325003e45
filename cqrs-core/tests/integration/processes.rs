use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use cqrs_core::{
    Clock, CommandContext, CommandDispatcher, CommandEnvelope, CommandHandler, Delivery,
    EventFilter, EventReader, InMemoryEventStore, LogQuery, ManualClock, ProcessManagerRunner,
    Projection, ProjectionRunner, Repository, Storage, Version,
};

use crate::domain::{
    CONFERENCE, Order, OrderCommand, OrderStatus, Registration, RegistrationTimeout, Seats,
    SeatsCommand, WINDOW_MINUTES,
};

/// The registration flow wired as an application would: one `System` hands out the
/// repositories, the process manager and the dispatcher, on one store and one manual clock.
struct Flow {
    system: cqrs_core::System,
    storage: Arc<dyn Storage>,
    clock: ManualClock,
    orders: Repository<Order>,
    seats: Repository<Seats>,
    process: ProcessManagerRunner<Registration>,
    dispatcher: CommandDispatcher,
}

impl Flow {
    fn new(storage: Arc<dyn Storage>, clock: ManualClock) -> Self {
        let system = cqrs_core::System::builder(Arc::clone(&storage))
            .clock(Arc::new(clock.clone()))
            .build();
        let orders = system.repository::<Order>();
        let seats = system.repository::<Seats>();
        let process = system.process_manager::<Registration>();
        let dispatcher = system.dispatcher();
        Self {
            system,
            storage,
            clock,
            orders,
            seats,
            process,
            dispatcher,
        }
    }

    /// Runs the process manager and the dispatcher until neither has anything left to do.
    async fn settle(&self) {
        self.system.settle().await.unwrap();
    }

    async fn order_status(&self, id: &str) -> OrderStatus {
        self.orders
            .load(&id.to_owned())
            .await
            .unwrap()
            .state
            .unwrap()
            .status
    }

    async fn available(&self) -> u32 {
        self.seats
            .load(&CONFERENCE.to_owned())
            .await
            .unwrap()
            .state
            .map_or(0, |s| s.available)
    }
}

async fn system() -> Flow {
    let system = Flow::new(Arc::new(InMemoryEventStore::new()), ManualClock::default());
    system
        .seats
        .handle(&CONFERENCE.to_owned(), SeatsCommand::Add { quantity: 10 })
        .await
        .unwrap();
    system
}

#[tokio::test]
async fn confirmed_order_completes_and_its_timeout_is_ignored() {
    let s = system().await;
    s.orders
        .handle(&"o1".to_owned(), OrderCommand::Place { seats: 2 })
        .await
        .unwrap();
    s.settle().await;
    assert_eq!(s.available().await, 8, "the process reserved the seats");
    let (state, completed) = s.process.load("o1").await.unwrap().unwrap();
    assert!(state.reserved && !completed);

    s.orders
        .handle(&"o1".to_owned(), OrderCommand::Confirm)
        .await
        .unwrap();
    s.settle().await;
    assert!(
        s.process.load("o1").await.unwrap().unwrap().1,
        "confirmation completes the process"
    );
    assert_eq!(
        s.storage.next_due().await.unwrap(),
        None,
        "confirmation cancels the expiry, in the same save"
    );

    s.clock.advance(Duration::minutes(WINDOW_MINUTES + 1));
    s.settle().await;
    assert_eq!(
        s.order_status("o1").await,
        OrderStatus::Confirmed,
        "a late timeout of a finished process changes nothing"
    );
    assert_eq!(s.available().await, 8);
    assert_eq!(
        s.storage.next_due().await.unwrap(),
        None,
        "the timeout was consumed"
    );
}

#[tokio::test]
async fn unconfirmed_order_expires_and_releases_its_seats_in_one_flow() {
    let s = system().await;
    let place = CommandContext::new();
    s.orders
        .handle_with(
            &"o2".to_owned(),
            OrderCommand::Place { seats: 3 },
            place.clone(),
        )
        .await
        .unwrap();
    s.settle().await;
    assert_eq!(s.available().await, 7);

    s.clock.advance(Duration::minutes(WINDOW_MINUTES - 1));
    s.settle().await;
    assert_eq!(
        s.order_status("o2").await,
        OrderStatus::Pending,
        "not yet due"
    );

    s.clock.advance(Duration::minutes(1));
    s.settle().await;
    assert_eq!(
        s.order_status("o2").await,
        OrderStatus::Rejected,
        "the timeout rejected the order"
    );
    assert_eq!(s.available().await, 10, "and released its seats");
    assert!(s.process.load("o2").await.unwrap().unwrap().1);

    let flow = s
        .storage
        .query_log(
            &LogQuery::new()
                .with_correlation_ids([place.command_id])
                .with_limit(100),
        )
        .await
        .unwrap();
    let types: Vec<&str> = flow.iter().map(|e| e.message_type()).collect();
    for expected in [
        "order.place",
        "order.placed",
        "seats.reserve",
        "seats.reserved",
        "registration.expire",
        "order.reject",
        "order.rejected",
        "seats.cancel",
        "seats.cancelled",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} is missing from the flow's log: {types:?}"
        );
    }
}

#[tokio::test]
async fn timeouts_survive_a_restart_and_take_effect_once() {
    let store: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::default();
    {
        let before = Flow::new(Arc::clone(&store), clock.clone());
        before
            .seats
            .handle(&CONFERENCE.to_owned(), SeatsCommand::Add { quantity: 5 })
            .await
            .unwrap();
        before
            .orders
            .handle(&"o3".to_owned(), OrderCommand::Place { seats: 5 })
            .await
            .unwrap();
        before.settle().await;
        assert_eq!(before.available().await, 0);
    }

    // A new process, with nothing in memory, on the same store.
    let after = Arc::new(Flow::new(Arc::clone(&store), clock.clone()));
    clock.advance(Duration::minutes(WINDOW_MINUTES));
    // Two dispatchers race for the due timeout; leases and idempotency make it count once.
    let (a, b) = (Arc::clone(&after), Arc::clone(&after));
    let (ra, rb) = tokio::join!(async move { a.dispatcher.run_due().await }, async move {
        b.dispatcher.run_due().await
    });
    ra.unwrap();
    rb.unwrap();
    after.settle().await;
    assert_eq!(after.order_status("o3").await, OrderStatus::Rejected);
    assert_eq!(after.available().await, 5);
    let order_events = store
        .read_stream(&"order-o3".parse().unwrap(), Version::START)
        .await
        .unwrap();
    assert_eq!(order_events.len(), 2, "placed, then rejected once");
}

#[tokio::test]
async fn a_redelivered_timeout_takes_effect_once() {
    let s = system().await;
    s.orders
        .handle(&"o4".to_owned(), OrderCommand::Place { seats: 1 })
        .await
        .unwrap();
    s.settle().await;
    let (state, _) = s.process.load("o4").await.unwrap().unwrap();
    let timeout = |id| {
        CommandEnvelope::new(
            "registration-o4".parse().unwrap(),
            &RegistrationTimeout::Expire,
            CommandContext::new().with_command_id(id),
        )
        .unwrap()
    };

    // A stale timeout (not the one the process is waiting for) is handled, and recorded, once.
    let stale = timeout(uuid::Uuid::new_v4());
    assert_eq!(
        s.process.deliver(stale.clone()).await.unwrap(),
        Delivery::Accepted
    );
    assert_eq!(s.process.deliver(stale).await.unwrap(), Delivery::Duplicate);
    assert_eq!(s.order_status("o4").await, OrderStatus::Pending);

    let real = timeout(state.expiry);
    assert_eq!(
        s.process.deliver(real.clone()).await.unwrap(),
        Delivery::Accepted
    );
    assert_eq!(
        s.process.deliver(real).await.unwrap(),
        Delivery::Ignored,
        "the process finished, so a copy is dropped"
    );
}

#[tokio::test]
async fn redelivered_events_do_not_react_twice() {
    let s = system().await;
    s.orders
        .handle(&"o5".to_owned(), OrderCommand::Place { seats: 1 })
        .await
        .unwrap();
    let placed = s
        .storage
        .read_filtered(
            cqrs_core::Position::START,
            10,
            &EventFilter::all().with_types(["order.placed"]),
        )
        .await
        .unwrap()
        .events;
    s.process.handle_event(&placed[0]).await.unwrap();
    s.process.handle_event(&placed[0]).await.unwrap();
    let due = s
        .storage
        .claim_due(s.clock.now(), 100, Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "one reservation command, not two: {due:?}");
    assert_eq!(s.process.name(), "registration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_runners_drive_the_flow_live() {
    let s = system().await;
    let process = ProjectionRunner::new(
        Arc::clone(&s.storage) as Arc<dyn EventReader>,
        Arc::new(s.process.clone()),
    )
    .spawn();
    let dispatcher = s.dispatcher.clone().spawn();

    s.orders
        .handle(&"o6".to_owned(), OrderCommand::Place { seats: 4 })
        .await
        .unwrap();
    eventually(|| async { s.available().await == 6 }).await;
    s.clock.advance(Duration::minutes(WINDOW_MINUTES));
    eventually(|| async { s.order_status("o6").await == OrderStatus::Rejected }).await;
    eventually(|| async { s.available().await == 10 }).await;

    dispatcher.stop().await;
    process.stop().await;
}

/// Waits (up to 10 s) for a condition that background tasks will make true.
async fn eventually<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition did not become true"
        );
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_undeliverable_command_is_retried_then_parked_until_retried_or_discarded() {
    let s = system().await;
    let lost = CommandEnvelope::new(
        "nowhere-1".parse().unwrap(),
        &OrderCommand::Confirm,
        CommandContext::new(),
    )
    .unwrap();
    s.storage
        .schedule(vec![cqrs_core::ScheduledCommand::new(
            lost.clone(),
            s.clock.now(),
        )])
        .await
        .unwrap();
    let dispatcher = s
        .dispatcher
        .clone()
        .with_max_attempts(3)
        .with_lease(Duration::seconds(30));
    let give_up = async || {
        for attempt in 1..=3 {
            let finished = dispatcher.run_due().await.unwrap();
            assert_eq!(finished, usize::from(attempt == 3), "attempt {attempt}");
            s.clock.advance(Duration::seconds(31));
        }
    };
    give_up().await;
    assert_eq!(
        s.storage.next_due().await.unwrap(),
        None,
        "given up after three attempts"
    );
    let parked = s
        .storage
        .find_parked(lost.id)
        .await
        .unwrap()
        .expect("the command is parked as a dead letter");
    assert_eq!(parked.scheduled.attempts, 3);
    assert!(
        parked.reason.starts_with("gave up after 3 attempts: ")
            && parked.reason.contains("nowhere-1"),
        "the reason says why: {}",
        parked.reason
    );
    assert!(
        s.storage.find_command(lost.id).await.unwrap().is_none(),
        "a dead letter is not in the message log yet: a retry may still handle it"
    );

    // The operator retries it: it is delivered again, with three fresh attempts.
    assert!(
        s.storage
            .retry_parked(lost.id, s.clock.now())
            .await
            .unwrap()
    );
    assert!(s.storage.find_parked(lost.id).await.unwrap().is_none());
    give_up().await;
    assert!(
        s.storage.find_parked(lost.id).await.unwrap().is_some(),
        "parked again after three more attempts"
    );

    // Then discards it: the message log records it as rejected, with the reason.
    assert!(
        cqrs_core::discard_parked(
            &*s.storage,
            lost.id,
            "discarded by the operator",
            s.clock.now()
        )
        .await
        .unwrap()
    );
    assert!(s.storage.find_parked(lost.id).await.unwrap().is_none());
    assert!(s.storage.list_scheduled(None, 10).await.unwrap().is_empty());
    let record = s
        .storage
        .find_command(lost.id)
        .await
        .unwrap()
        .expect("the discard is in the message log");
    let cqrs_core::Outcome::Rejected { message, .. } = record.outcome else {
        panic!("a discarded command is rejected: {:?}", record.outcome);
    };
    assert!(
        message.starts_with("discarded by the operator (gave up after 3 attempts: "),
        "{message}"
    );
    assert!(
        !cqrs_core::discard_parked(&*s.storage, lost.id, "twice", s.clock.now())
            .await
            .unwrap(),
        "discarding twice does nothing"
    );
}

/// Fails every delivery, after parking the command itself: as another dispatcher, which
/// claimed it once this one's lease ended, would have parked it meanwhile.
struct ParkedElsewhere(Arc<dyn Storage>);

#[async_trait::async_trait]
impl CommandHandler for ParkedElsewhere {
    async fn deliver(
        &self,
        envelope: CommandEnvelope,
    ) -> Result<Delivery, cqrs_core::DispatchError> {
        let parked = self
            .0
            .park(
                envelope.id,
                1,
                "parked by the other dispatcher",
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        assert!(parked);
        Err(cqrs_core::DispatchError::Invalid("still failing".into()))
    }
}

#[tokio::test]
async fn a_dead_letter_parked_by_another_dispatcher_is_left_parked() {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
    let lost = CommandEnvelope::new(
        "nowhere-1".parse().unwrap(),
        &OrderCommand::Confirm,
        CommandContext::new(),
    )
    .unwrap();
    storage
        .schedule(vec![cqrs_core::ScheduledCommand::new(
            lost.clone(),
            chrono::Utc::now(),
        )])
        .await
        .unwrap();
    let dispatcher = CommandDispatcher::new(
        Arc::clone(&storage),
        Arc::new(ParkedElsewhere(Arc::clone(&storage))),
    )
    .with_max_attempts(1);
    assert_eq!(dispatcher.run_due().await.unwrap(), 1, "given up");
    let parked = storage
        .find_parked(lost.id)
        .await
        .unwrap()
        .expect("still a dead letter, not dropped");
    assert_eq!(parked.reason, "parked by the other dispatcher");
    assert!(
        storage.find_command(lost.id).await.unwrap().is_none(),
        "not recorded as rejected"
    );
}

/// A process manager with a bug: it finishes instances it never started.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Careless;

impl cqrs_core::ProcessManager for Careless {
    const NAME: &'static str = "careless";
    type Event = crate::domain::RegistrationInput;
    type Timeout = RegistrationTimeout;
    type Error = std::convert::Infallible;

    fn route(event: &Self::Event, stream: &cqrs_core::StreamId) -> Option<String> {
        <Registration as cqrs_core::ProcessManager>::route(event, stream)
    }

    fn react(
        state: Option<&Self>,
        event: &Self::Event,
        _: &cqrs_core::EventContext<'_>,
    ) -> Result<cqrs_core::Reaction<Self>, Self::Error> {
        Ok(match (state, event) {
            (None, crate::domain::RegistrationInput::OrderConfirmed { .. }) => {
                cqrs_core::Reaction::unchanged().complete()
            }
            _ => cqrs_core::Reaction::new(Careless),
        })
    }

    fn on_timeout(
        _: &Self,
        _: RegistrationTimeout,
        _: &cqrs_core::TimeoutContext<'_>,
    ) -> Result<cqrs_core::Reaction<Self>, Self::Error> {
        Ok(cqrs_core::Reaction::unchanged())
    }
}

#[tokio::test]
async fn an_event_a_process_manager_cannot_take_is_skipped_not_retried_forever() {
    let s = system().await;
    // A confirmation for an order Careless never saw: its reaction finishes an instance that
    // has no state, which no retry can fix.
    s.storage
        .append(
            &"order-ghost".parse().unwrap(),
            cqrs_core::ExpectedVersion::Any,
            vec![cqrs_core::NewEvent::new(
                "order.confirmed",
                cqrs_core::Json::parse(r#"{"order":"ghost"}"#).unwrap(),
            )],
        )
        .await
        .unwrap();
    s.orders
        .handle(&"later".to_owned(), OrderCommand::Place { seats: 1 })
        .await
        .unwrap();
    let careless = ProcessManagerRunner::<Careless>::new(Arc::clone(&s.storage));
    let runner = ProjectionRunner::new(
        Arc::clone(&s.storage) as Arc<dyn EventReader>,
        Arc::new(careless.clone()),
    );
    runner
        .catch_up()
        .await
        .expect("the runner goes past the poison event");
    assert!(
        careless.load("ghost").await.unwrap().is_none(),
        "nothing was saved for it"
    );
    assert!(
        careless.load("later").await.unwrap().is_some(),
        "later events are still handled"
    );
}

#[tokio::test]
async fn a_timeout_that_does_not_decode_is_undeliverable_with_its_cause() {
    let s = system().await;
    s.orders
        .handle(&"o9".to_owned(), OrderCommand::Place { seats: 1 })
        .await
        .unwrap();
    s.settle().await;
    let target = ProcessManagerRunner::<Registration>::instance_id("o9").unwrap();
    let bogus = CommandEnvelope {
        id: uuid::Uuid::new_v4(),
        target,
        command_type: "registration.snooze".into(),
        payload: cqrs_core::Json::null(),
        correlation_id: None,
        causation_id: None,
        headers: Default::default(),
    };
    let err = s.process.deliver(bogus).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, cqrs_core::DispatchError::Invalid(_)),
        "a timeout that cannot decode never will: {err:?}"
    );
    assert!(
        message.contains("timeout registration.snooze for registration-o9 does not decode")
            && message.contains("unknown message type \"registration.snooze\""),
        "the reason and its cause are kept: {message}"
    );
}

#[test]
fn process_errors_keep_their_causes_and_say_whether_to_retry() {
    use cqrs_core::{ErrorChain, ProcessError, StoreError};

    let err = ProcessManagerRunner::<Registration>::instance_id(&"x".repeat(300)).unwrap_err();
    assert!(matches!(err, ProcessError::InstanceId { .. }), "{err:?}");
    assert!(err.is_permanent());
    assert!(
        std::error::Error::source(&err).is_some(),
        "the invalid stream id is the source"
    );
    let store = ProcessError::Store(StoreError::backend(std::io::Error::other("disk full")));
    assert!(!store.is_permanent(), "a store failure may pass");
    assert_eq!(
        ErrorChain(&store).to_string(),
        "storage backend failed: disk full"
    );
}

/// Records what it delivers; the first command to `slow-1` waits until a command to another
/// target has been delivered.
struct Gate {
    delivered: std::sync::Mutex<Vec<(String, String)>>,
    other_delivered: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl CommandHandler for Gate {
    async fn deliver(
        &self,
        envelope: CommandEnvelope,
    ) -> Result<Delivery, cqrs_core::DispatchError> {
        let target = envelope.target.to_string();
        let first_slow = target == "slow-1"
            && !self
                .delivered
                .lock()
                .unwrap()
                .iter()
                .any(|(t, _)| *t == target);
        if first_slow {
            self.other_delivered.notified().await;
        }
        self.delivered
            .lock()
            .unwrap()
            .push((target.clone(), envelope.payload.as_str().to_owned()));
        if target != "slow-1" {
            self.other_delivered.notify_one();
        }
        Ok(Delivery::Accepted)
    }
}

/// A target whose delivery is slow does not hold the others up, and each target still takes
/// its commands in the order they fell due.
#[tokio::test]
async fn one_slow_target_does_not_hold_up_the_others_and_each_keeps_its_order() {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::default();
    let start = clock.now();
    let mut scheduled = Vec::new();
    for (i, target) in ["slow-1", "slow-1", "fast-1", "slow-1", "fast-2"]
        .into_iter()
        .enumerate()
    {
        let envelope = CommandEnvelope::new(
            target.parse().unwrap(),
            &OrderCommand::Place {
                seats: u32::try_from(i).unwrap(),
            },
            CommandContext::new(),
        )
        .unwrap();
        scheduled.push(cqrs_core::ScheduledCommand::new(
            envelope,
            start + Duration::milliseconds(i64::try_from(i).unwrap()),
        ));
    }
    storage.schedule(scheduled).await.unwrap();
    clock.advance(Duration::seconds(1));
    let gate = Arc::new(Gate {
        delivered: std::sync::Mutex::default(),
        other_delivered: tokio::sync::Notify::new(),
    });
    let dispatcher = CommandDispatcher::new(Arc::clone(&storage), gate.clone())
        .with_clock(Arc::new(clock.clone()));
    let completed = tokio::time::timeout(StdDuration::from_secs(10), dispatcher.run_due())
        .await
        .expect("one target waiting for another does not stall the dispatcher")
        .unwrap();
    assert_eq!(completed, 5);
    let delivered = gate.delivered.lock().unwrap().clone();
    let slow: Vec<&str> = delivered
        .iter()
        .filter(|(t, _)| t == "slow-1")
        .map(|(_, p)| p.as_str())
        .collect();
    assert_eq!(
        slow,
        [r#"{"seats":0}"#, r#"{"seats":1}"#, r#"{"seats":3}"#],
        "in the order they fell due: {delivered:?}"
    );
    assert_ne!(
        delivered[0].0, "slow-1",
        "another target went first: {delivered:?}"
    );

    // Everything was delivered once: a second pass finds nothing.
    let sequential = CommandDispatcher::new(Arc::clone(&storage), gate.clone())
        .with_clock(Arc::new(clock.clone()))
        .with_concurrency(1);
    assert_eq!(sequential.run_due().await.unwrap(), 0, "nothing is left");
}

/// Instances run beside each other within a batch, and each takes its own events in log
/// order (placed, then reserved, then confirmed), whatever the concurrency.
#[tokio::test]
async fn process_instances_run_beside_each_other_each_in_its_order() {
    for concurrency in [1, 16] {
        let s = system().await;
        s.seats
            .handle(&CONFERENCE.to_owned(), SeatsCommand::Add { quantity: 100 })
            .await
            .unwrap();
        let ids: Vec<String> = (0..12).map(|i| format!("o{i}")).collect();
        for id in &ids {
            s.orders
                .handle(id, OrderCommand::Place { seats: 1 })
                .await
                .unwrap();
        }
        for id in &ids {
            s.seats
                .handle(
                    &CONFERENCE.to_owned(),
                    SeatsCommand::Reserve {
                        order: id.clone(),
                        seats: 1,
                    },
                )
                .await
                .unwrap();
        }
        for id in ids.iter().step_by(2) {
            s.orders.handle(id, OrderCommand::Confirm).await.unwrap();
        }
        let runner = s.process.clone().with_concurrency(concurrency);
        let filter = Projection::filter(&runner);
        let events: Vec<_> = s
            .storage
            .read_all(cqrs_core::Position::START, 1_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| filter.matches(e))
            .collect();
        runner.handle_events(&events).await.unwrap();
        for (i, id) in ids.iter().enumerate() {
            let (state, completed) = runner.load(id).await.unwrap().expect("started");
            assert!(
                state.reserved,
                "{id} reserved after it was placed ({concurrency})"
            );
            assert_eq!(completed, i % 2 == 0, "{id} confirmed last ({concurrency})");
        }
    }
}
