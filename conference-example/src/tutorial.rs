//! The small aggregate the tutorial (`docs/tutorial/`) builds in its first chapter, for the
//! chapters after it to import instead of repeating it.
//!
//! # Examples
//!
//! ```
//! use conference_example::tutorial::{Seats, SeatsCommand, SeatsError, SeatsEvent};
//! use cqrs_core::testing::Scenario;
//!
//! Scenario::<Seats>::new("devconf".into())
//!     .given([SeatsEvent::Added { quantity: 2 }])
//!     .when(SeatsCommand::Reserve { order: "o-1".into(), quantity: 3 })
//!     .then_error(SeatsError::NotEnough { available: 2 });
//! ```

use cqrs_core::{Aggregate, ApplyError, DomainEvent};
use serde::{Deserialize, Serialize};

/// A conference's seats: how many are left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seats {
    /// Seats left.
    pub available: u32,
}

/// What the seats can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatsCommand {
    /// Put seats on sale.
    #[serde(rename = "tutorial.add_seats")]
    Add {
        /// How many.
        quantity: u32,
    },
    /// Hold seats for an order.
    #[serde(rename = "tutorial.reserve_seats")]
    Reserve {
        /// The order.
        order: String,
        /// How many.
        quantity: u32,
    },
    /// Give an order's seats back.
    #[serde(rename = "tutorial.release_seats")]
    Release {
        /// The order.
        order: String,
        /// How many.
        quantity: u32,
    },
}

/// What happened to the seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatsEvent {
    /// Seats went on sale.
    #[serde(rename = "tutorial.seats_added")]
    Added {
        /// How many.
        quantity: u32,
    },
    /// Seats were held for an order.
    #[serde(rename = "tutorial.seats_reserved")]
    Reserved {
        /// The order.
        order: String,
        /// How many.
        quantity: u32,
    },
    /// An order's seats came back.
    #[serde(rename = "tutorial.seats_released")]
    Released {
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
    /// Fewer seats are left than asked for.
    #[error("only {available} seats left")]
    NotEnough {
        /// Seats left.
        available: u32,
    },
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
            SeatsCommand::Reserve { quantity, .. } if quantity > available => {
                Err(SeatsError::NotEnough { available })
            }
            SeatsCommand::Reserve { order, quantity } => {
                Ok(vec![SeatsEvent::Reserved { order, quantity }])
            }
            SeatsCommand::Release { order, quantity } => {
                Ok(vec![SeatsEvent::Released { order, quantity }])
            }
        }
    }

    fn apply(state: Option<Self>, event: &SeatsEvent) -> Result<Self, ApplyError> {
        let available = state.map_or(0, |s| s.available);
        let available = match event {
            SeatsEvent::Added { quantity } | SeatsEvent::Released { quantity, .. } => {
                available + quantity
            }
            SeatsEvent::Reserved { quantity, .. } => available
                .checked_sub(*quantity)
                .ok_or_else(|| ApplyError::new("more seats reserved than there were"))?,
        };
        Ok(Self { available })
    }
}
