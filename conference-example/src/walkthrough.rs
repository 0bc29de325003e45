//! A runnable tour of the framework: seats, orders, a registration process with an expiry
//! timeout, a remaining-seats read model and the message log, on the in-memory store.
//!
//! It is the conference flow in miniature. Time is a [`ManualClock`], so the 15-minute
//! reservation window passes in an instant.
//!
//! # Examples
//!
//! ```
//! # tokio_test::block_on(async {
//! let mut out = Vec::new();
//! conference_example::walkthrough::run(&mut out).await?;
//! let text = String::from_utf8(out)?;
//! assert!(text.contains("remaining seats: 7"));
//! # Ok::<(), anyhow::Error>(()) }).unwrap();
//! ```

use std::io::Write;
use std::sync::Arc;

use chrono::Duration;
use cqrs_core::{
    Aggregate, ApplyError, BlueGreen, CommandContext, DomainEvent, EventContext, EventFilter,
    InMemoryEventStore, LogQuery, LoggedMessage, ManualClock, MemoryProjection, Outgoing,
    ProcessManager, ProjectionError, Reaction, RecordedEvent, Storage, StreamId, System,
    TimeoutContext,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How long a reservation is held before the order expires.
pub const RESERVATION_WINDOW_MINUTES: i64 = 15;

/// The seats of one conference: how many are left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsAvailability {
    /// Seats nobody holds.
    pub remaining: u32,
    /// Seats held per order.
    pub held: Vec<(String, u32)>,
}

/// What the seats of a conference can be asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SeatsCommand {
    /// Make more seats available.
    #[serde(rename = "seats.add")]
    Add {
        /// How many.
        quantity: u32,
    },
    /// Hold seats for an order.
    #[serde(rename = "seats.reserve")]
    Reserve {
        /// The order.
        order: String,
        /// How many.
        quantity: u32,
    },
    /// Release an order's seats.
    #[serde(rename = "seats.cancel_reservation")]
    CancelReservation {
        /// The order.
        order: String,
    },
}

/// What happened to the seats of a conference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatsEvent {
    /// Seats were added.
    #[serde(rename = "seats.added")]
    Added {
        /// How many.
        quantity: u32,
    },
    /// Seats were held for an order.
    #[serde(rename = "seats.reserved")]
    Reserved {
        /// The order.
        order: String,
        /// How many.
        quantity: u32,
    },
    /// An order's seats were released.
    #[serde(rename = "seats.reservation_cancelled")]
    ReservationCancelled {
        /// The order.
        order: String,
        /// How many.
        quantity: u32,
    },
}

impl DomainEvent for SeatsEvent {}

/// Why the seats refuse a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SeatsError {
    /// Not enough seats are left.
    #[error("only {remaining} seats remain")]
    SoldOut {
        /// How many remain.
        remaining: u32,
    },
}

impl Aggregate for SeatsAvailability {
    const TYPE: &'static str = "seats";
    type Id = String;
    type Command = SeatsCommand;
    type Event = SeatsEvent;
    type Error = SeatsError;

    fn handle(
        state: Option<&Self>,
        _id: &String,
        command: SeatsCommand,
    ) -> Result<Vec<SeatsEvent>, SeatsError> {
        let remaining = state.map_or(0, |s| s.remaining);
        match command {
            SeatsCommand::Add { quantity } => Ok(vec![SeatsEvent::Added { quantity }]),
            SeatsCommand::Reserve { quantity, .. } if quantity > remaining => {
                Err(SeatsError::SoldOut { remaining })
            }
            SeatsCommand::Reserve { order, quantity } => {
                Ok(vec![SeatsEvent::Reserved { order, quantity }])
            }
            SeatsCommand::CancelReservation { order } => Ok(state
                .and_then(|s| s.held.iter().find(|(o, _)| *o == order))
                .map(|(order, quantity)| SeatsEvent::ReservationCancelled {
                    order: order.clone(),
                    quantity: *quantity,
                })
                .into_iter()
                .collect()),
        }
    }

    fn apply(state: Option<Self>, event: &SeatsEvent) -> Result<Self, ApplyError> {
        let mut seats = state.unwrap_or(SeatsAvailability {
            remaining: 0,
            held: Vec::new(),
        });
        match event {
            SeatsEvent::Added { quantity } => seats.remaining += quantity,
            SeatsEvent::Reserved { order, quantity } => {
                seats.remaining = seats
                    .remaining
                    .checked_sub(*quantity)
                    .ok_or_else(|| ApplyError::new("oversold"))?;
                seats.held.push((order.clone(), *quantity));
            }
            SeatsEvent::ReservationCancelled { order, quantity } => {
                seats.remaining += quantity;
                seats.held.retain(|(o, _)| o != order);
            }
        }
        Ok(seats)
    }
}

/// An order's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Placed, not paid.
    Pending,
    /// Paid.
    Confirmed,
    /// Expired.
    Rejected,
}

/// An order for seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Where it stands.
    pub status: OrderStatus,
}

/// What an order can be asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OrderCommand {
    /// Place it.
    #[serde(rename = "order.place")]
    Place {
        /// The conference.
        conference: String,
        /// How many seats.
        quantity: u32,
    },
    /// Confirm it (payment received).
    #[serde(rename = "order.confirm")]
    Confirm,
    /// Reject it (the reservation expired).
    #[serde(rename = "order.reject")]
    Reject,
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// It was placed.
    #[serde(rename = "order.placed")]
    Placed {
        /// The order id.
        order: String,
        /// The conference.
        conference: String,
        /// How many seats.
        quantity: u32,
    },
    /// It was confirmed.
    #[serde(rename = "order.confirmed")]
    Confirmed {
        /// The order id.
        order: String,
    },
    /// It was rejected.
    #[serde(rename = "order.rejected")]
    Rejected {
        /// The order id.
        order: String,
    },
}

impl DomainEvent for OrderEvent {}

/// Why an order refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum OrderError {
    /// The order exists already.
    #[error("the order was already placed")]
    AlreadyPlaced,
    /// There is no such order.
    #[error("no such order")]
    NotFound,
    /// The order was confirmed or rejected already.
    #[error("the order is no longer pending")]
    NotPending,
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Id = String;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(
        state: Option<&Self>,
        id: &String,
        command: OrderCommand,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        let order = id.clone();
        match (state, command) {
            (
                None,
                OrderCommand::Place {
                    conference,
                    quantity,
                },
            ) => Ok(vec![OrderEvent::Placed {
                order,
                conference,
                quantity,
            }]),
            (Some(_), OrderCommand::Place { .. }) => Err(OrderError::AlreadyPlaced),
            (None, _) => Err(OrderError::NotFound),
            (Some(o), _) if o.status != OrderStatus::Pending => Err(OrderError::NotPending),
            (Some(_), OrderCommand::Confirm) => Ok(vec![OrderEvent::Confirmed { order }]),
            (Some(_), OrderCommand::Reject) => Ok(vec![OrderEvent::Rejected { order }]),
        }
    }

    fn apply(state: Option<Self>, event: &OrderEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (None, OrderEvent::Placed { .. }) => Ok(Order {
                status: OrderStatus::Pending,
            }),
            (Some(_), OrderEvent::Confirmed { .. }) => Ok(Order {
                status: OrderStatus::Confirmed,
            }),
            (Some(_), OrderEvent::Rejected { .. }) => Ok(Order {
                status: OrderStatus::Rejected,
            }),
            (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
        }
    }
}

/// The events the registration process listens to, by the type names their aggregates use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationInput {
    /// An order was placed.
    #[serde(rename = "order.placed")]
    OrderPlaced {
        /// The order.
        order: String,
        /// The conference.
        conference: String,
        /// How many seats.
        quantity: u32,
    },
    /// An order was confirmed.
    #[serde(rename = "order.confirmed")]
    OrderConfirmed {
        /// The order.
        order: String,
    },
}

impl DomainEvent for RegistrationInput {}

/// The registration process's own timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationTimeout {
    /// The reservation window is over.
    #[serde(rename = "registration.expire")]
    Expire,
}

/// One order's registration: reserve seats, wait for payment, release them if it never comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The order.
    pub order: String,
    /// The conference.
    pub conference: String,
    /// The id of the expiry timeout it waits for.
    pub expiry: Uuid,
}

impl ProcessManager for Registration {
    const NAME: &'static str = "registration";
    type Event = RegistrationInput;
    type Timeout = RegistrationTimeout;
    type Error = std::convert::Infallible;

    fn route(event: &RegistrationInput, _stream: &StreamId) -> Option<String> {
        match event {
            RegistrationInput::OrderPlaced { order, .. }
            | RegistrationInput::OrderConfirmed { order } => Some(order.clone()),
        }
    }

    fn react(
        state: Option<&Self>,
        event: &RegistrationInput,
        cx: &EventContext<'_>,
    ) -> Result<Reaction<Self>, Self::Error> {
        Ok(match (state, event) {
            (
                None,
                RegistrationInput::OrderPlaced {
                    order,
                    conference,
                    quantity,
                },
            ) => {
                let expire = Outgoing::timeout::<Self>(order, &RegistrationTimeout::Expire)
                    .at(cx.now + Duration::minutes(RESERVATION_WINDOW_MINUTES));
                let reserve = SeatsCommand::Reserve {
                    order: order.clone(),
                    quantity: *quantity,
                };
                Reaction::new(Registration {
                    order: order.clone(),
                    conference: conference.clone(),
                    expiry: expire.id(),
                })
                .send(Outgoing::to::<SeatsAvailability>(conference, &reserve))
                .send(expire)
            }
            (Some(_), RegistrationInput::OrderConfirmed { .. }) => Reaction::unchanged().complete(),
            _ => Reaction::unchanged(),
        })
    }

    fn on_timeout(
        state: &Self,
        _: RegistrationTimeout,
        cx: &TimeoutContext<'_>,
    ) -> Result<Reaction<Self>, Self::Error> {
        if cx.command_id != state.expiry {
            return Ok(Reaction::unchanged());
        }
        let cancel = SeatsCommand::CancelReservation {
            order: state.order.clone(),
        };
        Ok(Reaction::unchanged()
            .send(Outgoing::to::<Order>(&state.order, &OrderCommand::Reject))
            .send(Outgoing::to::<SeatsAvailability>(
                &state.conference,
                &cancel,
            ))
            .complete())
    }
}

/// The remaining-seats read model: seats left per conference, from the seat events.
#[must_use]
pub fn remaining_seats() -> MemoryProjection<std::collections::BTreeMap<String, i64>> {
    MemoryProjection::new(
        "remaining_seats",
        std::collections::BTreeMap::new(),
        |remaining, event: &RecordedEvent| {
            let conference = event.stream.local_id().unwrap_or_default().to_owned();
            let change: SeatsEvent =
                cqrs_core::decode_message(&event.event_type, event.payload.as_str())
                    .map_err(ProjectionError::from_error)?;
            let delta = match change {
                SeatsEvent::Added { quantity }
                | SeatsEvent::ReservationCancelled { quantity, .. } => i64::from(quantity),
                SeatsEvent::Reserved { quantity, .. } => -i64::from(quantity),
            };
            *remaining.entry(conference).or_default() += delta;
            Ok(())
        },
    )
    .with_filter(EventFilter::all().with_categories([SeatsAvailability::TYPE]))
}

/// Runs the tour, writing what happens to `out`.
///
/// # Errors
///
/// Any error of the framework (none is expected on the in-memory store) or of `out`.
pub async fn run(out: &mut impl Write) -> anyhow::Result<()> {
    let store: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new("2026-05-04T09:00:00Z".parse()?);
    // One system wires every part: the store, the clock, the routes of scheduled commands.
    let system = System::builder(Arc::clone(&store))
        .clock(Arc::new(clock.clone()))
        .build();
    let seats = system.repository::<SeatsAvailability>();
    let orders = system.repository::<Order>();
    let _registration = system.process_manager::<Registration>();
    let remaining = system.blue_green(remaining_seats());

    // Runs the process manager, the read model and the dispatcher until the flow comes to
    // rest. Each step takes a second of (manual) time, as it would take a little time in a
    // real deployment.
    let settle = || async {
        clock.advance(Duration::seconds(1));
        system.settle().await
    };
    let conference = "devconf".to_owned();
    let left = |remaining: &BlueGreen<_>| {
        remaining.read(|r: &std::collections::BTreeMap<String, i64>| {
            r.get("devconf").copied().unwrap_or(0)
        })
    };

    writeln!(
        out,
        "cqrs walkthrough: the conference flow in miniature, on the in-memory store"
    )?;
    writeln!(
        out,
        "(the full conference app, web site and CLI: `cargo run -p conference-example`)\n"
    )?;

    seats
        .handle(&conference, SeatsCommand::Add { quantity: 10 })
        .await?;
    settle().await?;
    writeln!(
        out,
        "1. devconf opens 10 seats                      remaining seats: {}",
        left(&remaining)
    )?;

    orders
        .handle(
            &"ana".to_owned(),
            OrderCommand::Place {
                conference: conference.clone(),
                quantity: 3,
            },
        )
        .await?;
    settle().await?;
    writeln!(
        out,
        "2. ana orders 3; the process reserves them    remaining seats: {}",
        left(&remaining)
    )?;

    orders
        .handle(&"ana".to_owned(), OrderCommand::Confirm)
        .await?;
    settle().await?;
    writeln!(
        out,
        "3. ana pays; her order is confirmed           remaining seats: {}",
        left(&remaining)
    )?;

    let ben = CommandContext::new();
    orders
        .handle_with(
            &"ben".to_owned(),
            OrderCommand::Place {
                conference: conference.clone(),
                quantity: 4,
            },
            ben.clone(),
        )
        .await?;
    settle().await?;
    writeln!(
        out,
        "4. ben orders 4 and never pays                remaining seats: {}",
        left(&remaining)
    )?;

    clock.advance(Duration::minutes(RESERVATION_WINDOW_MINUTES));
    settle().await?;
    writeln!(
        out,
        "5. 15 minutes pass: ben's reservation expires remaining seats: {}",
        left(&remaining)
    )?;

    let status = orders
        .load(&"ben".to_owned())
        .await?
        .state
        .map(|o| o.status);
    let status = status.map_or_else(|| "missing".to_owned(), |s| format!("{s:?}").to_lowercase());
    writeln!(
        out,
        "\nben's order is now {status}. Its flow, from the message log:"
    )?;
    let flow = store
        .query_log(&LogQuery::new().with_correlation_ids([ben.command_id]))
        .await?;
    for entry in flow {
        let (kind, target) = match &entry.message {
            LoggedMessage::Command(c) => ("command", c.target.to_string()),
            LoggedMessage::Event(e) => ("event  ", e.stream.to_string()),
        };
        writeln!(
            out,
            "  {} {kind} {:<28} {target}",
            entry.cursor.recorded_at.format("%H:%M:%S"),
            entry.message_type()
        )?;
    }
    Ok(())
}
