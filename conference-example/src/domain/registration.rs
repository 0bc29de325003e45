//! `RegistrationProcess`: the process manager that takes one order from placement to
//! confirmation: it reserves the seats, waits for payment, commits the seats and creates the
//! seat assignments, or, when time runs out, rejects the order and releases its seats.

use chrono::{DateTime, Utc};
use cqrs_core::{
    DomainEvent, EventContext, Outgoing, ProcessManager, Reaction, StreamId, TimeoutContext,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::assignments::{SeatAssignments, SeatAssignmentsCommand};
use crate::domain::order::{Order, OrderCommand};
use crate::domain::seats::{SeatsAvailability, SeatsAvailabilityCommand};
use crate::domain::values::{ConferenceId, OrderId, SeatQuantity};

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationState {
    /// Seats were asked for; waiting for the conference's answer.
    AwaitingReservationConfirmation,
    /// Seats are held; waiting for payment (or, for a free order, for its confirmation).
    ReservationConfirmationReceived,
    /// Paid; waiting for the order's confirmation.
    PaymentConfirmationReceived,
}

/// One order's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationProcess {
    /// The conference.
    pub conference: ConferenceId,
    /// The order (and the id of its seat reservation).
    pub order: OrderId,
    /// Where it stands.
    pub state: RegistrationState,
    /// When the reservation runs out for the registrant.
    pub reservation_expires_at: DateTime<Utc>,
    /// The seats held, once the conference answered.
    pub seats: Vec<SeatQuantity>,
    /// The id of the last reservation request: answers to earlier ones are stale.
    pub seat_reservation_command: Uuid,
    /// The id of the expiry timeout (none once the order is confirmed).
    pub expiration_command: Option<Uuid>,
    /// When the order was placed (none in a registration started before this was kept: its
    /// deadline stays the one set at placement).
    #[serde(default)]
    pub placed_at: Option<DateTime<Utc>>,
    /// When unconfirmed seats go back to the pool, as set at placement or moved at the first
    /// reservation.
    #[serde(default)]
    pub seats_released_at: Option<DateTime<Utc>>,
    /// When the conference first answered with seats: the registrant's window counts from
    /// then.
    #[serde(default)]
    pub first_reserved_at: Option<DateTime<Utc>>,
}

/// The events a registration reacts to, from orders, seats and payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationInput {
    /// An order was placed.
    #[serde(rename = "registration.order_placed")]
    OrderPlaced {
        /// The conference.
        conference: ConferenceId,
        /// The seats asked for.
        seats: Vec<SeatQuantity>,
        /// When the reservation runs out for the registrant.
        reservation_expires_at: DateTime<Utc>,
        /// When unconfirmed seats go back to the pool.
        seats_released_at: DateTime<Utc>,
    },
    /// An order's seats changed.
    #[serde(rename = "registration.order_updated")]
    OrderUpdated {
        /// The seats asked for now.
        seats: Vec<SeatQuantity>,
    },
    /// An order was confirmed.
    #[serde(rename = "registration.order_confirmed")]
    OrderConfirmed,
    /// The conference holds seats for a reservation.
    #[serde(rename = "registration.seats_reserved")]
    SeatsReserved {
        /// The reservation (the order's id).
        reservation: OrderId,
        /// The seats held.
        details: Vec<SeatQuantity>,
    },
    /// A payment went through.
    #[serde(rename = "payments.payment_completed")]
    PaymentCompleted {
        /// The order it paid for.
        order: OrderId,
    },
}

impl DomainEvent for RegistrationInput {
    fn schema_version(event_type: &str) -> u16 {
        crate::domain::versions::current_schema_version(event_type)
    }
}

/// The registration's own timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationTimeout {
    /// Time is up: reject the order and release its seats, unless it was confirmed.
    #[serde(rename = "registration.expire_registration_process")]
    Expire,
}

/// An input a registration cannot accept in its state (the runner logs it and moves on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// An order was placed again, for another conference.
    #[error("order {order} was placed for conference {conference}")]
    OtherConference {
        /// The order.
        order: OrderId,
        /// The conference it was placed for first.
        conference: ConferenceId,
    },
    /// The input does not fit the registration's state.
    #[error("{input} while {state:?}")]
    Unexpected {
        /// What came.
        input: &'static str,
        /// Where the registration stood.
        state: RegistrationState,
    },
    /// The input concerns a registration that never started.
    #[error("{0} for a registration that never started")]
    NotStarted(&'static str),
}

impl ProcessManager for RegistrationProcess {
    const NAME: &'static str = "registration";
    type Event = RegistrationInput;
    type Timeout = RegistrationTimeout;
    type Error = RegistrationError;

    fn route(event: &RegistrationInput, stream: &StreamId) -> Option<String> {
        match event {
            RegistrationInput::OrderPlaced { .. }
            | RegistrationInput::OrderUpdated { .. }
            | RegistrationInput::OrderConfirmed => stream
                .as_str()
                .split_once('-')
                .filter(|(category, _)| *category == <Order as cqrs_core::Aggregate>::TYPE)
                .and_then(|(_, id)| id.parse::<OrderId>().ok())
                .map(|order| order.to_string()),
            RegistrationInput::SeatsReserved { reservation, .. } => Some(reservation.to_string()),
            RegistrationInput::PaymentCompleted { order } => Some(order.to_string()),
        }
    }

    fn react(
        state: Option<&Self>,
        event: &RegistrationInput,
        context: &EventContext<'_>,
    ) -> Result<Reaction<Self>, RegistrationError> {
        use RegistrationInput as I;
        use RegistrationState as S;
        let Some(process) = state else {
            return match event {
                I::OrderPlaced {
                    conference,
                    seats,
                    reservation_expires_at,
                    seats_released_at,
                } => start(
                    context,
                    *conference,
                    seats,
                    *reservation_expires_at,
                    *seats_released_at,
                ),
                // Seats answered, paid or confirmed for an order this manager never saw placed
                // (it was placed before the manager existed): nothing to steer.
                other => Err(RegistrationError::NotStarted(input_name(other))),
            };
        };
        let unexpected = |input| RegistrationError::Unexpected {
            input,
            state: process.state,
        };
        match (process.state, event) {
            (_, I::OrderPlaced { conference, .. }) => {
                if *conference == process.conference {
                    Ok(Reaction::unchanged()) // redelivered
                } else {
                    Err(RegistrationError::OtherConference {
                        order: process.order,
                        conference: process.conference,
                    })
                }
            }
            (
                S::AwaitingReservationConfirmation | S::ReservationConfirmationReceived,
                I::OrderUpdated { seats },
            ) => {
                let request = Outgoing::to::<SeatsAvailability>(
                    &process.conference,
                    &SeatsAvailabilityCommand::MakeReservation {
                        reservation: process.order,
                        seats: seats.clone(),
                    },
                );
                // The original deadline still holds: no new timeout.
                Ok(Reaction::new(Self {
                    state: S::AwaitingReservationConfirmation,
                    seat_reservation_command: request.id(),
                    ..process.clone()
                })
                .send(request))
            }
            (_, I::OrderUpdated { .. }) => Err(unexpected("OrderUpdated")),
            (S::AwaitingReservationConfirmation, I::SeatsReserved { details, .. }) => {
                if context
                    .recorded
                    .metadata
                    .command_id
                    .is_some_and(|id| id != process.seat_reservation_command)
                {
                    return Ok(Reaction::unchanged()); // the answer to an earlier request
                }
                Ok(reserved(process, details, context.now))
            }
            (_, I::SeatsReserved { .. }) => {
                if context.recorded.metadata.command_id == Some(process.seat_reservation_command) {
                    Ok(Reaction::unchanged()) // a duplicate of the answer already taken
                } else {
                    Err(unexpected("SeatsReserved"))
                }
            }
            (S::ReservationConfirmationReceived, I::PaymentCompleted { .. }) => {
                Ok(Reaction::new(Self {
                    state: S::PaymentConfirmationReceived,
                    ..process.clone()
                })
                .send(Outgoing::to::<Order>(
                    &process.order,
                    &OrderCommand::Confirm,
                )))
            }
            (_, I::PaymentCompleted { .. }) => Err(unexpected("PaymentCompleted")),
            (
                S::ReservationConfirmationReceived | S::PaymentConfirmationReceived,
                I::OrderConfirmed,
            ) => Ok(Reaction::new(Self {
                expiration_command: None,
                ..process.clone()
            })
            .send(Outgoing::to::<SeatsAvailability>(
                &process.conference,
                &SeatsAvailabilityCommand::CommitReservation {
                    reservation: process.order,
                },
            ))
            .send(Outgoing::to::<SeatAssignments>(
                &process.order,
                &SeatAssignmentsCommand::Create {
                    seats: process.seats.clone(),
                },
            ))
            .complete()),
            (_, I::OrderConfirmed) => Err(unexpected("OrderConfirmed")),
        }
    }

    fn on_timeout(
        state: &Self,
        timeout: RegistrationTimeout,
        context: &TimeoutContext<'_>,
    ) -> Result<Reaction<Self>, RegistrationError> {
        let RegistrationTimeout::Expire = timeout;
        if state.expiration_command != Some(context.command_id) {
            return Ok(Reaction::unchanged());
        }
        if state.state == RegistrationState::PaymentConfirmationReceived {
            // Paid in time: the order's confirmation is under way, and releasing its seats now
            // would sell them twice. (The CQRS Journey expired such an order here.)
            return Ok(Reaction::unchanged());
        }
        Ok(expire(state))
    }
}

/// An order was placed: reserve its seats and set the deadline that holds until the
/// conference answers, or reject it if even that deadline passed before the registration
/// first saw it (a placement from history, not from a backlog).
fn start(
    context: &EventContext<'_>,
    conference: ConferenceId,
    seats: &[SeatQuantity],
    reservation_expires_at: DateTime<Utc>,
    seats_released_at: DateTime<Utc>,
) -> Result<Reaction<RegistrationProcess>, RegistrationError> {
    let order: OrderId = context.instance.parse().map_err(|_| {
        RegistrationError::NotStarted("OrderPlaced for an instance that is no order id")
    })?;
    let seats_released_at = seats_released_at.max(reservation_expires_at);
    let process = RegistrationProcess {
        conference,
        order,
        state: RegistrationState::AwaitingReservationConfirmation,
        reservation_expires_at,
        seats: Vec::new(),
        seat_reservation_command: Uuid::nil(),
        expiration_command: None,
        placed_at: Some(context.recorded.metadata.recorded_at),
        seats_released_at: Some(seats_released_at),
        first_reserved_at: None,
    };
    if seats_released_at <= context.now {
        // The finished instance keeps a state, which is what the runner saves the rejection
        // with.
        return Ok(Reaction::new(process)
            .send(Outgoing::to::<Order>(&order, &OrderCommand::Reject))
            .complete());
    }
    let request = Outgoing::to::<SeatsAvailability>(
        &conference,
        &SeatsAvailabilityCommand::MakeReservation {
            reservation: order,
            seats: seats.to_vec(),
        },
    );
    // Until the seats are held this deadline stands in case no answer ever comes (a seat type
    // withdrawn meanwhile, say); the first answer moves it.
    let expiry =
        Outgoing::timeout::<RegistrationProcess>(context.instance, &RegistrationTimeout::Expire)
            .at(seats_released_at);
    Ok(Reaction::new(RegistrationProcess {
        seat_reservation_command: request.id(),
        expiration_command: Some(expiry.id()),
        ..process
    })
    .send(request)
    .send(expiry))
}

/// The conference holds `details` for the order: tell the order, with its deadline. At the
/// first answer the registrant's window starts over from `now`, so that time spent queued
/// before the system first looked at the order is not taken from the registrant (the CQRS
/// Journey counted from placement). Later answers (seats changed) keep the deadline.
fn reserved(
    process: &RegistrationProcess,
    details: &[SeatQuantity],
    now: DateTime<Utc>,
) -> Reaction<RegistrationProcess> {
    let mut next = RegistrationProcess {
        state: RegistrationState::ReservationConfirmationReceived,
        seats: details.to_vec(),
        first_reserved_at: process.first_reserved_at.or(Some(now)),
        ..process.clone()
    };
    let mut expiry = None;
    if let (None, Some(placed_at), Some(released_at)) = (
        process.first_reserved_at,
        process.placed_at,
        process.seats_released_at,
    ) && now > placed_at
    {
        let waited = now - placed_at;
        next.reservation_expires_at = process.reservation_expires_at + waited;
        next.seats_released_at = Some(released_at + waited);
        let timeout = Outgoing::timeout::<RegistrationProcess>(
            &process.order.to_string(),
            &RegistrationTimeout::Expire,
        )
        .at(released_at + waited);
        next.expiration_command = Some(timeout.id());
        expiry = Some(timeout);
    }
    let mut reaction = Reaction::new(next.clone()).send(Outgoing::to::<Order>(
        &process.order,
        &OrderCommand::MarkSeatsAsReserved {
            seats: details.to_vec(),
            reservation_expires_at: next.reservation_expires_at,
        },
    ));
    if let Some(timeout) = expiry {
        if let Some(old) = process.expiration_command {
            reaction = reaction.cancel(old);
        }
        reaction = reaction.send(timeout);
    }
    reaction
}

/// The compensation: reject the order and give its seats back.
fn expire(process: &RegistrationProcess) -> Reaction<RegistrationProcess> {
    Reaction::new(RegistrationProcess {
        expiration_command: None,
        ..process.clone()
    })
    .send(Outgoing::to::<Order>(&process.order, &OrderCommand::Reject))
    .send(Outgoing::to::<SeatsAvailability>(
        &process.conference,
        &SeatsAvailabilityCommand::CancelReservation {
            reservation: process.order,
        },
    ))
    .complete()
}

fn input_name(input: &RegistrationInput) -> &'static str {
    match input {
        RegistrationInput::OrderPlaced { .. } => "OrderPlaced",
        RegistrationInput::OrderUpdated { .. } => "OrderUpdated",
        RegistrationInput::OrderConfirmed => "OrderConfirmed",
        RegistrationInput::SeatsReserved { .. } => "SeatsReserved",
        RegistrationInput::PaymentCompleted { .. } => "PaymentCompleted",
    }
}
