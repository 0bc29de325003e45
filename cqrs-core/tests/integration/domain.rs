use chrono::Duration;
use cqrs_core::{
    Aggregate, ApplyError, DomainEvent, EventContext, Outgoing, ProcessManager, Reaction,
    TimeoutContext,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub(crate) const CONFERENCE: &str = "main";
pub(crate) const WINDOW_MINUTES: i64 = 15;

/// An order of some seats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) seats: u32,
    pub(crate) status: OrderStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum OrderCommand {
    #[serde(rename = "order.place")]
    Place { seats: u32 },
    #[serde(rename = "order.confirm")]
    Confirm,
    #[serde(rename = "order.reject")]
    Reject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum OrderEvent {
    #[serde(rename = "order.placed")]
    Placed { order: String, seats: u32 },
    #[serde(rename = "order.confirmed")]
    Confirmed { order: String },
    #[serde(rename = "order.rejected")]
    Rejected { order: String },
}

impl DomainEvent for OrderEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub(crate) enum OrderError {
    #[error("the order was already placed")]
    AlreadyPlaced,
    #[error("no such order")]
    Missing,
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
            (None, OrderCommand::Place { seats }) => Ok(vec![OrderEvent::Placed { order, seats }]),
            (Some(_), OrderCommand::Place { .. }) => Err(OrderError::AlreadyPlaced),
            (None, _) => Err(OrderError::Missing),
            (Some(o), _) if o.status != OrderStatus::Pending => Err(OrderError::NotPending),
            (Some(_), OrderCommand::Confirm) => Ok(vec![OrderEvent::Confirmed { order }]),
            (Some(_), OrderCommand::Reject) => Ok(vec![OrderEvent::Rejected { order }]),
        }
    }

    fn apply(state: Option<Self>, event: &OrderEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (None, OrderEvent::Placed { seats, .. }) => Ok(Order {
                seats: *seats,
                status: OrderStatus::Pending,
            }),
            (Some(o), OrderEvent::Confirmed { .. }) => Ok(Order {
                status: OrderStatus::Confirmed,
                ..o
            }),
            (Some(o), OrderEvent::Rejected { .. }) => Ok(Order {
                status: OrderStatus::Rejected,
                ..o
            }),
            (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
        }
    }
}

/// The seats of one conference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Seats {
    pub(crate) available: u32,
    pub(crate) reserved: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum SeatsCommand {
    #[serde(rename = "seats.add")]
    Add { quantity: u32 },
    #[serde(rename = "seats.reserve")]
    Reserve { order: String, seats: u32 },
    #[serde(rename = "seats.cancel")]
    Cancel { order: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum SeatsEvent {
    #[serde(rename = "seats.added")]
    Added { quantity: u32 },
    #[serde(rename = "seats.reserved")]
    Reserved { order: String, seats: u32 },
    #[serde(rename = "seats.cancelled")]
    Cancelled { order: String, seats: u32 },
}

impl DomainEvent for SeatsEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub(crate) enum SeatsError {
    #[error("only {available} seats left")]
    NotEnough { available: u32 },
}

impl Aggregate for Seats {
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
        let available = state.map_or(0, |s| s.available);
        match command {
            SeatsCommand::Add { quantity } => Ok(vec![SeatsEvent::Added { quantity }]),
            SeatsCommand::Reserve { seats, .. } if seats > available => {
                Err(SeatsError::NotEnough { available })
            }
            SeatsCommand::Reserve { order, seats } => {
                Ok(vec![SeatsEvent::Reserved { order, seats }])
            }
            SeatsCommand::Cancel { order } => Ok(state
                .and_then(|s| s.reserved.iter().find(|(o, _)| *o == order))
                .map(|(order, seats)| SeatsEvent::Cancelled {
                    order: order.clone(),
                    seats: *seats,
                })
                .into_iter()
                .collect()),
        }
    }

    fn apply(state: Option<Self>, event: &SeatsEvent) -> Result<Self, ApplyError> {
        let mut s = state.unwrap_or(Seats {
            available: 0,
            reserved: Vec::new(),
        });
        match event {
            SeatsEvent::Added { quantity } => s.available += quantity,
            SeatsEvent::Reserved { order, seats } => {
                s.available -= seats;
                s.reserved.push((order.clone(), *seats));
            }
            SeatsEvent::Cancelled { order, seats } => {
                s.available += seats;
                s.reserved.retain(|(o, _)| o != order);
            }
        }
        Ok(s)
    }
}

/// What the registration process listens to: events of both aggregates, by their type names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum RegistrationInput {
    #[serde(rename = "order.placed")]
    OrderPlaced { order: String, seats: u32 },
    #[serde(rename = "order.confirmed")]
    OrderConfirmed { order: String },
    #[serde(rename = "seats.reserved")]
    SeatsReserved { order: String, seats: u32 },
}

impl DomainEvent for RegistrationInput {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum RegistrationTimeout {
    #[serde(rename = "registration.expire")]
    Expire,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Registration {
    pub(crate) order: String,
    pub(crate) reserved: bool,
    pub(crate) expiry: Uuid,
}

#[derive(Debug, thiserror::Error)]
#[error("seats reserved for an order that is not awaiting them")]
pub(crate) struct Unexpected;

impl ProcessManager for Registration {
    const NAME: &'static str = "registration";
    type Event = RegistrationInput;
    type Timeout = RegistrationTimeout;
    type Error = Unexpected;

    fn route(event: &RegistrationInput, _stream: &cqrs_core::StreamId) -> Option<String> {
        match event {
            RegistrationInput::OrderPlaced { order, .. }
            | RegistrationInput::OrderConfirmed { order }
            | RegistrationInput::SeatsReserved { order, .. } => Some(order.clone()),
        }
    }

    fn react(
        state: Option<&Self>,
        event: &RegistrationInput,
        cx: &EventContext<'_>,
    ) -> Result<Reaction<Self>, Unexpected> {
        Ok(match (state, event) {
            (None, RegistrationInput::OrderPlaced { order, seats }) => {
                let expire = Outgoing::timeout::<Self>(order, &RegistrationTimeout::Expire)
                    .at(cx.now + Duration::minutes(WINDOW_MINUTES));
                let state = Registration {
                    order: order.clone(),
                    reserved: false,
                    expiry: expire.id(),
                };
                Reaction::new(state)
                    .send(Outgoing::to::<Seats>(
                        &CONFERENCE.to_owned(),
                        &SeatsCommand::Reserve {
                            order: order.clone(),
                            seats: *seats,
                        },
                    ))
                    .send(expire)
            }
            (Some(r), RegistrationInput::SeatsReserved { .. }) if r.reserved => {
                return Err(Unexpected);
            }
            (Some(r), RegistrationInput::SeatsReserved { .. }) => Reaction::new(Registration {
                reserved: true,
                ..r.clone()
            }),
            (Some(r), RegistrationInput::OrderConfirmed { .. }) => {
                Reaction::unchanged().cancel(r.expiry).complete()
            }
            _ => Reaction::unchanged(),
        })
    }

    fn on_timeout(
        state: &Self,
        _timeout: RegistrationTimeout,
        cx: &TimeoutContext<'_>,
    ) -> Result<Reaction<Self>, Unexpected> {
        if cx.command_id != state.expiry {
            return Ok(Reaction::unchanged());
        }
        Ok(Reaction::unchanged()
            .send(Outgoing::to::<Order>(&state.order, &OrderCommand::Reject))
            .send(Outgoing::to::<Seats>(
                &CONFERENCE.to_owned(),
                &SeatsCommand::Cancel {
                    order: state.order.clone(),
                },
            ))
            .complete())
    }
}
