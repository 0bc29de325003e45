//! `SeatQuotas`: the bridge from conference management to registration. When a seat type
//! goes on sale or its quota changes, it adds or removes seats in the conference's
//! [`SeatsAvailability`].

use std::collections::BTreeMap;

use cqrs_core::{
    DomainEvent, EventContext, Outgoing, ProcessManager, Reaction, StreamId, TimeoutContext,
};
use serde::{Deserialize, Serialize};

use crate::domain::conference::{Conference, SeatType};
use crate::domain::seats::{SeatsAvailability, SeatsAvailabilityCommand};
use crate::domain::values::{ConferenceId, SeatTypeId};

/// The quotas of one conference's seat types on sale, as last sent to its seats.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeatQuotas {
    /// The conference.
    pub conference: ConferenceId,
    /// The quota of each seat type on sale.
    pub quotas: BTreeMap<SeatTypeId, u32>,
}

/// The conference events the bridge reacts to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatQuotaInput {
    /// A seat type went on sale.
    #[serde(rename = "conference.seat_created")]
    SeatCreated {
        /// Its id.
        seat_type: SeatTypeId,
        /// What it is.
        seats: SeatType,
    },
    /// A seat type on sale changed.
    #[serde(rename = "conference.seat_updated")]
    SeatUpdated {
        /// Its id.
        seat_type: SeatTypeId,
        /// What it is now.
        seats: SeatType,
    },
}

impl DomainEvent for SeatQuotaInput {
    fn schema_version(event_type: &str) -> u16 {
        crate::domain::versions::current_schema_version(event_type)
    }
}

/// The bridge has no timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoTimeout {}

/// An event the bridge cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event of a conference stream that is not a conference: {0}")]
pub struct SeatQuotaError(String);

impl ProcessManager for SeatQuotas {
    const NAME: &'static str = "seatquotas";
    type Event = SeatQuotaInput;
    type Timeout = NoTimeout;
    type Error = SeatQuotaError;

    fn route(_event: &SeatQuotaInput, stream: &StreamId) -> Option<String> {
        stream
            .as_str()
            .split_once('-')
            .filter(|(category, _)| *category == <Conference as cqrs_core::Aggregate>::TYPE)
            .map(|(_, id)| id.to_owned())
    }

    fn react(
        state: Option<&Self>,
        event: &SeatQuotaInput,
        context: &EventContext<'_>,
    ) -> Result<Reaction<Self>, SeatQuotaError> {
        let conference: ConferenceId = match state {
            Some(state) => state.conference,
            None => context
                .instance
                .parse()
                .map_err(|_| SeatQuotaError(context.instance.to_owned()))?,
        };
        let mut next = state.cloned().unwrap_or(Self {
            conference,
            quotas: BTreeMap::new(),
        });
        let (seat_type, quota, created) = match event {
            SeatQuotaInput::SeatCreated { seat_type, seats } => (*seat_type, seats.quantity, true),
            SeatQuotaInput::SeatUpdated { seat_type, seats } => (*seat_type, seats.quantity, false),
        };
        let before = next.quotas.get(&seat_type).copied();
        if created && before.is_some() {
            return Ok(Reaction::unchanged()); // a duplicate
        }
        let before = before.unwrap_or(0);
        next.quotas.insert(seat_type, quota);
        let command = match quota.cmp(&before) {
            std::cmp::Ordering::Greater => Some(SeatsAvailabilityCommand::AddSeats {
                seat_type,
                quantity: quota - before,
            }),
            std::cmp::Ordering::Less => Some(SeatsAvailabilityCommand::RemoveSeats {
                seat_type,
                quantity: before - quota,
            }),
            // A new seat type with no seats still becomes known to the conference's seats, so
            // that orders for it are refused for want of seats, not as unknown.
            std::cmp::Ordering::Equal if created => Some(SeatsAvailabilityCommand::AddSeats {
                seat_type,
                quantity: 0,
            }),
            std::cmp::Ordering::Equal => None,
        };
        let reaction = Reaction::new(next);
        Ok(match command {
            Some(command) => {
                reaction.send(Outgoing::to::<SeatsAvailability>(&conference, &command))
            }
            None => reaction,
        })
    }

    fn on_timeout(
        _state: &Self,
        timeout: NoTimeout,
        _context: &TimeoutContext<'_>,
    ) -> Result<Reaction<Self>, SeatQuotaError> {
        match timeout {}
    }
}
